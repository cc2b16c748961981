package rocketmq

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
	"github.com/sluicehq/sluice/pipelines"
)

// Extension attributes added to messages that are not CloudEvents.
const (
	ExtTopic   = "rocketmqtopic"
	ExtQueueID = "rocketmqqueueid" // Integer
	ExtOffset  = "rocketmqoffset"  // String: CloudEvents Integer is 32-bit, queue offsets are 64-bit
	ExtTags    = "rocketmqtags"
	ExtKeys    = "rocketmqkeys"
)

// DefaultEventType is the type of wrapped messages when the spec sets none.
const DefaultEventType = pipelines.DefaultRocketMQEventType

// DefaultContentType is the datacontenttype of wrapped messages without a
// content-type property; the body is not sniffed.
const DefaultContentType = "application/octet-stream"

// retryTopicPrefix starts the name of a consumer group's retry topic.
const retryTopicPrefix = "%RETRY%"

// mapper turns pulled messages into connector messages. Immutable after
// construction; safe for concurrent use.
type mapper struct {
	sourcePrefix string // "rocketmq://<first name server>/"
	eventType    string
	keyProperty  string // "" = first key
}

func newMapper(spec pipelines.RocketMQSource) mapper {
	et := spec.EventType
	if et == "" {
		et = DefaultEventType
	}
	return mapper{sourcePrefix: "rocketmq://" + spec.NameServers[0] + "/", eventType: et, keyProperty: spec.KeyProperty}
}

// laneName is "topic/brokerName/queueId".
func laneName(mq *primitive.MessageQueue) string {
	return mq.Topic + "/" + mq.BrokerName + "/" + strconv.Itoa(mq.QueueId)
}

// message maps m, pulled from mq (see docs/connectors/rocketmq.md,
// "Mapping"). A message that claims to be a CloudEvent but is malformed is
// wrapped like a plain one and carries the reason in DecodeErr. It reads
// m's properties, so it runs before the client hands m to any other
// goroutine.
func (mp mapper) message(m *primitive.MessageExt, mq *primitive.MessageQueue, l *lane, now time.Time) *connectors.Message {
	props := m.GetProperties()
	topic := mq.Topic
	if strings.HasPrefix(topic, retryTopicPrefix) {
		// Redelivered through the group's retry topic: name the topic it
		// was first sent to.
		if orig := props[primitive.PropertyRetryTopic]; orig != "" {
			topic = orig
		}
	}
	keys := props[primitive.PropertyKeys]
	firstKey, _, _ := strings.Cut(strings.TrimSpace(keys), primitive.PropertyKeySeparator)
	key := firstKey
	if mp.keyProperty != "" {
		key = props[mp.keyProperty]
	}
	msg := &connectors.Message{
		Lane: l.name,
		Key:  key,
		Coordinates: connectors.Coordinates{
			System:    "rocketmq",
			Topic:     mq.Topic,
			Partition: int32(mq.QueueId),
			Offset:    m.QueueOffset,
			ID:        m.MsgId,
		},
		Revoked:    l.revoked,
		Size:       len(m.Body),
		ReceivedAt: now,
	}
	ev, isCE, err := rocketmqce.Decode(props, firstKey, m.Body)
	switch {
	case isCE && err == nil:
		msg.Event = ev
		msg.Size = len(ev.Data()) // the data, not a structured envelope
	case isCE:
		msg.DecodeErr = fmt.Errorf("rocketmq message %s@%d (id %s): %w", l.name, m.QueueOffset, m.MsgId, err)
		msg.Event = mp.wrap(m, props, topic, mq, firstKey)
	default:
		msg.Event = mp.wrap(m, props, topic, mq, firstKey)
	}
	return msg
}

// wrap makes a CloudEvent out of a plain message.
func (mp mapper) wrap(m *primitive.MessageExt, props map[string]string, topic string, mq *primitive.MessageQueue, firstKey string) cloudevents.Event {
	ev := cloudevents.NewEvent()
	// MsgId is the client-generated UNIQ_KEY when the producer set one (it
	// survives redelivery through the retry topic), else the broker's
	// offset message id.
	ev.SetID(m.MsgId)
	ev.SetSource(mp.sourcePrefix + topic)
	ev.SetType(mp.eventType)
	tags, keys := props[primitive.PropertyTags], props[primitive.PropertyKeys]
	switch {
	case tags != "":
		ev.SetSubject(tags)
	case keys != "":
		ev.SetSubject(keys)
	}
	if m.BornTimestamp > 0 {
		ev.SetTime(time.UnixMilli(m.BornTimestamp).UTC())
	}
	ct := props[rocketmqce.ContentTypeProperty]
	if ct == "" {
		ct = DefaultContentType
	}
	ev.SetDataContentType(ct)
	ev.SetExtension(ExtTopic, topic)
	ev.SetExtension(ExtQueueID, mq.QueueId)
	ev.SetExtension(ExtOffset, strconv.FormatInt(m.QueueOffset, 10))
	if tags != "" {
		ev.SetExtension(ExtTags, tags)
	}
	if keys != "" {
		ev.SetExtension(ExtKeys, keys)
	}
	if firstKey != "" {
		ev.SetExtension(rocketmqce.PartitionKeyExtension, firstKey)
	}
	if len(m.Body) > 0 {
		ev.DataEncoded = m.Body
	}
	return ev
}
