package rabbitmq

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rabbitmq/amqpce"
	"github.com/sluicehq/sluice/pipelines"
)

// Extension attributes added to messages that are not CloudEvents.
const (
	ExtExchange    = "rabbitmqexchange"    // exchange published to (absent for the default exchange)
	ExtRoutingKey  = "rabbitmqroutingkey"  // routing key published with
	ExtRedelivered = "rabbitmqredelivered" // Boolean: the broker delivered it before
	// ExtPartitionKey carries Message.Key, as the Kafka source does with
	// the record key, so that a Kafka sink downstream keys results alike.
	ExtPartitionKey = "partitionkey"
)

// DefaultContentType is the datacontenttype of wrapped messages without a
// content-type property. The body is not sniffed.
const DefaultContentType = "application/octet-stream"

// System is the Coordinates.System of RabbitMQ messages.
const System = "rabbitmq"

// mapper turns deliveries into connector messages. Immutable after
// construction; safe for concurrent use.
type mapper struct {
	queue     string
	source    string // CloudEvents source of wrapped messages
	eventType string
	keyHeader string // header named by keyFrom: header:NAME
	keyNone   bool
}

func newMapper(queue, source, eventType, keyFrom string) mapper {
	if eventType == "" {
		eventType = pipelines.DefaultRabbitEventType
	}
	m := mapper{queue: queue, source: source, eventType: eventType}
	switch {
	case keyFrom == pipelines.RabbitKeyFromNone:
		m.keyNone = true
	case strings.HasPrefix(keyFrom, pipelines.RabbitKeyFromHeaderPrefix):
		m.keyHeader = strings.TrimPrefix(keyFrom, pipelines.RabbitKeyFromHeaderPrefix)
	}
	return m
}

// message maps d (see docs/connectors/rabbitmq.md, "Mapping"). A message
// that claims to be a CloudEvent but is malformed is wrapped like a plain
// message and carries the reason in DecodeErr.
func (m mapper) message(d *amqp.Delivery, revoked <-chan struct{}, now time.Time) *connectors.Message {
	msg := &connectors.Message{
		Lane: m.queue,
		Key:  m.key(d),
		Coordinates: connectors.Coordinates{
			System: System,
			Topic:  m.queue,
			Offset: -1,
		},
		Revoked:    revoked,
		Size:       len(d.Body),
		ReceivedAt: now,
	}
	ev, isCE, err := amqpce.Decode(d.Headers, d.ContentType, d.Body)
	switch {
	case isCE && err == nil:
		msg.Event = ev
	case isCE:
		msg.DecodeErr = fmt.Errorf("rabbitmq message on %s (message-id %q): %w", m.queue, d.MessageId, err)
		msg.Event = m.wrap(d, msg.Key)
	default:
		msg.Event = m.wrap(d, msg.Key)
	}
	msg.Coordinates.ID = d.MessageId
	if msg.Coordinates.ID == "" {
		msg.Coordinates.ID = msg.Event.ID()
	}
	return msg
}

// key is the ordering key per keyFrom.
func (m mapper) key(d *amqp.Delivery) string {
	switch {
	case m.keyNone:
		return ""
	case m.keyHeader != "":
		v, ok := d.Headers[m.keyHeader]
		if !ok || v == nil {
			return ""
		}
		if b, ok := v.([]byte); ok {
			return string(b)
		}
		return fmt.Sprint(v)
	default:
		return d.RoutingKey
	}
}

// wrap makes a CloudEvent out of a plain message.
func (m mapper) wrap(d *amqp.Delivery, key string) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(messageID(d))
	ev.SetSource(m.source)
	ev.SetType(m.eventType)
	if d.RoutingKey != "" {
		ev.SetSubject(d.RoutingKey)
		ev.SetExtension(ExtRoutingKey, d.RoutingKey)
	}
	if !d.Timestamp.IsZero() && d.Timestamp.Unix() > 0 {
		ev.SetTime(d.Timestamp)
	}
	ct := d.ContentType
	if ct == "" {
		ct = DefaultContentType
	}
	ev.SetDataContentType(ct)
	if d.Exchange != "" {
		ev.SetExtension(ExtExchange, d.Exchange)
	}
	ev.SetExtension(ExtRedelivered, d.Redelivered)
	if key != "" {
		ev.SetExtension(ExtPartitionKey, key)
	}
	if len(d.Body) > 0 {
		ev.DataEncoded = d.Body
	}
	return ev
}

// messageID is the id of a wrapped message: its message-id property, else
// a hash of what the publisher wrote (body and the properties a publisher
// sets), so that it stays the same when the broker redelivers the message,
// also after a trip through a dead-letter exchange (which changes the
// exchange and routing key). Two byte-identical messages published without
// message-id and timestamp get the same id: publishers should set
// message-id.
func messageID(d *amqp.Delivery) string {
	if d.MessageId != "" {
		return d.MessageId
	}
	h := sha256.New()
	var ts [8]byte
	if !d.Timestamp.IsZero() {
		binary.BigEndian.PutUint64(ts[:], uint64(d.Timestamp.Unix()))
	}
	h.Write(ts[:])
	for _, s := range []string{d.Type, d.AppId, d.CorrelationId, d.ContentType} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	h.Write(d.Body)
	return "sha256:" + hex.EncodeToString(h.Sum(nil)[:16])
}
