package pipelines

import (
	"net"
	"strconv"
	"strings"
	"time"
)

// RocketMQ settings: enumerations and defaults.
const (
	// RocketMQRetrySluice: failed events are retried by Sluice and then
	// dead-lettered to onFailure; a message handed back unprocessed stays
	// uncommitted until its queue is read again.
	RocketMQRetrySluice = "sluice"
	// RocketMQRetryBroker: a message handed back unprocessed is sent to the
	// group's %RETRY% topic and redelivered by the broker after its delay
	// levels, then moved to %DLQ% after maxReconsumeTimes.
	RocketMQRetryBroker = "broker"

	DefaultRocketMQStart             = StartEarliest
	DefaultRocketMQEventType         = "dev.sluice.rocketmq.message"
	DefaultRocketMQRetry             = RocketMQRetrySluice
	DefaultRocketMQMaxReconsumeTimes = 16
	DefaultRocketMQConsumeTimeout    = 15 * time.Minute
	DefaultRocketMQProducerGroup     = "sluice"
	DefaultRocketMQSendRetries       = 2
	DefaultRocketMQSendTimeout       = 3 * time.Second
)

// RocketMQSource consumes one topic with a clustering consumer group over the
// remoting protocol (name server + broker; no proxy needed). Each message
// queue is a lane, named "topic/brokerName/queueId". See
// docs/connectors/rocketmq.md.
type RocketMQSource struct {
	// NameServers are the name server addresses (host:port).
	NameServers []string `yaml:"nameServers" json:"nameServers" jsonschema:"required,minItems=1"`
	// Topic to consume.
	Topic string `yaml:"topic" json:"topic" jsonschema:"required"`
	// Group is the consumer group; instances sharing it share the topic's queues.
	Group string `yaml:"group" json:"group" jsonschema:"required"`
	// Tags is a tag expression ("a || b"; "*" or empty: every message),
	// evaluated by the broker. Not together with sql.
	Tags string `yaml:"tags,omitempty" json:"tags,omitempty"`
	// SQL is an SQL92 expression over user properties, evaluated by the
	// broker; the broker must run with enablePropertyFilter=true. Not
	// together with tags.
	SQL string `yaml:"sql,omitempty" json:"sql,omitempty"`
	// Start is where a group without a committed offset starts: earliest
	// or latest.
	Start string `yaml:"start,omitempty" json:"start,omitempty" jsonschema:"enum=earliest,enum=latest"`
	// EventType is the CloudEvents type given to messages that are not
	// already CloudEvents.
	EventType string `yaml:"eventType,omitempty" json:"eventType,omitempty"`
	// KeyProperty names the user property whose value is a message's
	// ordering key; empty means the first of the message's keys (KEYS).
	KeyProperty string `yaml:"keyProperty,omitempty" json:"keyProperty,omitempty"`
	// Retry chooses who retries: sluice (delivery.retry, then onFailure)
	// or broker (a failed event is handed back to the broker's %RETRY%
	// topic, then %DLQ%; delivery.retry.attempts should then be 1).
	Retry string `yaml:"retry,omitempty" json:"retry,omitempty" jsonschema:"enum=sluice,enum=broker"`
	// MaxReconsumeTimes is how often the broker redelivers a message handed
	// back with retry: broker before moving it to %DLQ%<group>.
	MaxReconsumeTimes int `yaml:"maxReconsumeTimes,omitempty" json:"maxReconsumeTimes,omitempty" jsonschema:"minimum=0"`
	// ConsumeTimeout is how long a message may stay unacknowledged before
	// the client sends it back to %RETRY%<group> (and commits past it):
	// longer-running events are processed again later.
	ConsumeTimeout Duration `yaml:"consumeTimeout,omitempty" json:"consumeTimeout,omitempty"`
	// ACL authenticates to the brokers with an access key (RocketMQ ACL).
	ACL *RocketMQACL `yaml:"acl,omitempty" json:"acl,omitempty"`
}

// RocketMQACL holds RocketMQ ACL credentials.
type RocketMQACL struct {
	// AccessKey is a secret reference.
	AccessKey Secret `yaml:"accessKey" json:"accessKey" jsonschema:"required"`
	// SecretKey is a secret reference.
	SecretKey Secret `yaml:"secretKey" json:"secretKey" jsonschema:"required"`
}

// RocketMQSink sends each event synchronously to a topic, in the CloudEvents
// binary mode of docs/connectors/rocketmq.md; only SEND_OK counts as
// written. Without nameServers, the RocketMQ source's name servers and ACL
// are used.
type RocketMQSink struct {
	// NameServers defaults to the RocketMQ source's name servers.
	NameServers []string `yaml:"nameServers,omitempty" json:"nameServers,omitempty"`
	// Topic to send to.
	Topic string `yaml:"topic" json:"topic" jsonschema:"required"`
	// ProducerGroup is the producer group name.
	ProducerGroup string `yaml:"producerGroup,omitempty" json:"producerGroup,omitempty"`
	// Key names the CloudEvents attribute or extension whose value becomes
	// the message key (KEYS) and sharding key (same key, same queue).
	Key string `yaml:"key,omitempty" json:"key,omitempty"`
	// Tag is the tag of every message sent.
	Tag string `yaml:"tag,omitempty" json:"tag,omitempty"`
	// TagAttribute names a CloudEvents attribute or extension whose value,
	// when the event has it, is the tag instead of tag.
	TagAttribute string `yaml:"tagAttribute,omitempty" json:"tagAttribute,omitempty"`
	// Retries is how often the client retries a failed send (on another
	// broker where there is one) before Write fails; 0 means the default.
	Retries int `yaml:"retries,omitempty" json:"retries,omitempty" jsonschema:"minimum=0"`
	// SendTimeout bounds one send attempt.
	SendTimeout Duration `yaml:"sendTimeout,omitempty" json:"sendTimeout,omitempty"`
	// ACL authenticates to the brokers; defaults to the source's with its
	// name servers.
	ACL *RocketMQACL `yaml:"acl,omitempty" json:"acl,omitempty"`
}

func validateRocketMQSource(v *validator, path string, s *RocketMQSource) {
	validateNameServers(v, path+".nameServers", s.NameServers)
	validateRocketMQName(v, path+".topic", s.Topic, "topic")
	validateRocketMQName(v, path+".group", s.Group, "group")
	if s.Tags != "" && s.SQL != "" {
		v.errorf(path+".sql", "tags and sql cannot both be set: a subscription has one selector")
	}
	if s.Tags != "" {
		validateTagExpression(v, path+".tags", s.Tags)
	}
	v.oneOf(path+".start", s.Start, StartEarliest, StartLatest)
	v.required(path+".eventType", s.EventType)
	v.oneOf(path+".retry", s.Retry, RocketMQRetrySluice, RocketMQRetryBroker)
	v.atLeast(path+".maxReconsumeTimes", s.MaxReconsumeTimes, 1)
	v.positive(path+".consumeTimeout", s.ConsumeTimeout)
	if s.ACL != nil {
		validateRocketMQACL(v, path+".acl", s.ACL)
	}
}

func validateRocketMQSink(v *validator, path string, s *RocketMQSink) {
	np := path + ".nameServers"
	switch {
	case len(s.NameServers) == 0 && !v.pos.has(np):
		v.missing(np, "there is no RocketMQ source to take them from")
	case v.pos == nil || v.pos.has(np):
		validateNameServers(v, np, s.NameServers)
		// Otherwise they were taken from the source and checked there.
	}
	validateRocketMQName(v, path+".topic", s.Topic, "topic")
	validateRocketMQName(v, path+".producerGroup", s.ProducerGroup, "producer group")
	v.required(path+".key", s.Key)
	if strings.ContainsAny(s.Tag, "|\x01\x02") || strings.TrimSpace(s.Tag) != s.Tag {
		v.errorf(path+".tag", "invalid tag %q: no '|', no surrounding spaces", s.Tag)
	}
	v.atLeast(path+".retries", s.Retries, 0)
	v.positive(path+".sendTimeout", s.SendTimeout)
	if s.ACL != nil {
		validateRocketMQACL(v, path+".acl", s.ACL)
	}
}

// validateNameServers checks host:port addresses, like Kafka brokers.
func validateNameServers(v *validator, path string, addrs []string) {
	if !v.requiredList(path, len(addrs)) {
		return
	}
	for i, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			v.errorf(indexPath(path, i), "invalid name server address %q: want host:port", a)
		}
	}
}

// validateRocketMQName checks a topic or group name: RocketMQ accepts
// letters, digits, '%', '|', '_' and '-', at most 127 characters; '%' and
// '|' are reserved for system topics and namespaces, so they are refused.
func validateRocketMQName(v *validator, path, name, what string) {
	if !v.required(path, name) {
		return
	}
	ok := len(name) <= 127
	for _, c := range name {
		ok = ok && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-')
	}
	if !ok {
		v.errorf(path, "invalid %s %q: want letters, digits, '_' and '-', at most 127 characters", what, name)
	}
}

// validateTagExpression checks "a || b" expressions: no empty alternatives.
func validateTagExpression(v *validator, path, expr string) {
	if strings.TrimSpace(expr) == "*" {
		return
	}
	for _, t := range strings.Split(expr, "||") {
		if t = strings.TrimSpace(t); t == "" || t == "*" || strings.Contains(t, "|") {
			v.errorf(path, "invalid tag expression %q: want tags separated by \"||\", or \"*\"", expr)
			return
		}
	}
}

func validateRocketMQACL(v *validator, path string, a *RocketMQACL) {
	if a.AccessKey.IsZero() {
		v.required(path+".accessKey", "")
	}
	if a.SecretKey.IsZero() {
		v.required(path+".secretKey", "")
	}
}

func rocketMQSourceDefaults(s *RocketMQSource) {
	setDefault(&s.Start, DefaultRocketMQStart)
	setDefault(&s.EventType, DefaultRocketMQEventType)
	setDefault(&s.Retry, DefaultRocketMQRetry)
	setDefault(&s.MaxReconsumeTimes, DefaultRocketMQMaxReconsumeTimes)
	setDefault(&s.ConsumeTimeout, Duration(DefaultRocketMQConsumeTimeout))
}

// rocketMQSinkDefaults fills the sink's settings; without name servers it
// takes the RocketMQ source's name servers and, unless it has its own, its
// ACL (shared, not copied).
func rocketMQSinkDefaults(s *RocketMQSink, src *SourceSpec) {
	if r := src.RocketMQ; r != nil && len(s.NameServers) == 0 {
		s.NameServers = append([]string(nil), r.NameServers...)
		if s.ACL == nil {
			s.ACL = r.ACL
		}
	}
	setDefault(&s.ProducerGroup, DefaultRocketMQProducerGroup)
	setDefault(&s.Key, DefaultSinkKey)
	setDefault(&s.Retries, DefaultRocketMQSendRetries)
	setDefault(&s.SendTimeout, Duration(DefaultRocketMQSendTimeout))
}
