package kafka

import (
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
)

// Extension attributes added to records that are not CloudEvents.
const (
	ExtTopic     = "kafkatopic"
	ExtPartition = "kafkapartition" // Integer
	ExtOffset    = "kafkaoffset"    // String: CloudEvents Integer is 32-bit, offsets are 64-bit
)

// DefaultEventType is the type of wrapped (non-CloudEvent) records when the
// spec does not set eventType.
const DefaultEventType = "dev.sluice.kafka.message"

// DefaultContentType is the datacontenttype of wrapped records without a
// content-type header. The payload is not sniffed: guessing JSON would cost a
// full parse per record and would be wrong for binary formats that happen to
// look like JSON.
const DefaultContentType = "application/octet-stream"

// mapper turns consumer records into connector messages. Immutable after
// construction but for the decoder's caches; safe for concurrent use (every
// lane's goroutine maps its own records).
type mapper struct {
	sourcePrefix string // "kafka://<first broker>/"
	eventType    string
	dec          *kafkace.Decoder
}

func newMapper(brokers []string, eventType string) mapper {
	if eventType == "" {
		eventType = DefaultEventType
	}
	return mapper{sourcePrefix: "kafka://" + brokers[0] + "/", eventType: eventType, dec: &kafkace.Decoder{}}
}

// message maps rec (see docs/connectors/kafka.md, "Mapping"). A record that
// claims to be a CloudEvent but is malformed is wrapped like a plain record
// and carries the reason in DecodeErr.
func (m mapper) message(rec *sarama.ConsumerMessage, l *lane, now time.Time) *connectors.Message {
	msg := &connectors.Message{
		Lane: l.name,
		Key:  string(rec.Key),
		Coordinates: connectors.Coordinates{
			System:    "kafka",
			Topic:     rec.Topic,
			Partition: rec.Partition,
			Offset:    rec.Offset,
		},
		Revoked:    l.revoked,
		Size:       len(rec.Value),
		ReceivedAt: now,
	}
	ev, isCE, err := m.dec.Decode(rec.Headers, rec.Key, rec.Value)
	switch {
	case isCE && err == nil:
		msg.Event = ev
	case isCE:
		msg.DecodeErr = fmt.Errorf("kafka record %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
		msg.Event = m.wrap(rec)
	default:
		msg.Event = m.wrap(rec)
	}
	return msg
}

// wrap makes a CloudEvent out of a plain record.
func (m mapper) wrap(rec *sarama.ConsumerMessage) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(rec.Topic + "-" + strconv.FormatInt(int64(rec.Partition), 10) + "-" + strconv.FormatInt(rec.Offset, 10))
	ev.SetSource(m.sourcePrefix + rec.Topic)
	ev.SetType(m.eventType)
	if len(rec.Key) > 0 {
		ev.SetSubject(string(rec.Key))
		ev.SetExtension(kafkace.PartitionKeyExtension, string(rec.Key))
	}
	if !rec.Timestamp.IsZero() && rec.Timestamp.Unix() > 0 {
		ev.SetTime(rec.Timestamp)
	}
	ct := DefaultContentType
	for _, h := range rec.Headers {
		if h != nil && string(h.Key) == kafkace.ContentTypeHeader && len(h.Value) > 0 {
			ct = string(h.Value)
			break
		}
	}
	ev.SetDataContentType(ct)
	ev.SetExtension(ExtTopic, rec.Topic)
	ev.SetExtension(ExtPartition, rec.Partition)
	ev.SetExtension(ExtOffset, strconv.FormatInt(rec.Offset, 10))
	if len(rec.Value) > 0 {
		ev.DataEncoded = rec.Value
	}
	return ev
}
