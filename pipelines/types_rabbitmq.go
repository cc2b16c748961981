package pipelines

import (
	"net/url"
	"slices"
	"strings"
	"time"
)

// RabbitMQ enumerations.
const (
	RabbitOnNackRequeue    = "requeue"
	RabbitOnNackDeadLetter = "dead-letter"

	RabbitKeyFromRoutingKey = "routingKey"
	RabbitKeyFromNone       = "none"
	// RabbitKeyFromHeaderPrefix starts a keyFrom naming a message header
	// ("header:tenant").
	RabbitKeyFromHeaderPrefix = "header:"

	// RabbitRoutingKeyFromExtensionPrefix starts a routingKeyFrom naming a
	// CloudEvents extension ("extension:region").
	RabbitRoutingKeyFromExtensionPrefix = "extension:"

	RabbitQueueClassic = "classic"
	RabbitQueueQuorum  = "quorum"
)

// RabbitMQ defaults (see the doc comments of the fields they fill).
const (
	DefaultRabbitOnNack       = RabbitOnNackRequeue
	DefaultRabbitKeyFrom      = RabbitKeyFromRoutingKey
	DefaultRabbitEventType    = "dev.sluice.rabbitmq.message"
	DefaultRabbitQueueType    = RabbitQueueClassic
	DefaultRabbitExchangeType = "direct"
	DefaultRabbitHeartbeat    = 10 * time.Second
)

// rabbitExchangeTypes are the exchange types RabbitMQ ships with.
var rabbitExchangeTypes = []string{"direct", "fanout", "topic", "headers"}

// rabbitRoutingKeyAttrs are the CloudEvents attributes routingKeyFrom may name.
var rabbitRoutingKeyAttrs = []string{"type", "subject", "source", "id"}

// RabbitMQSource consumes one queue with manual acknowledgements. The
// number of unacknowledged messages (basic.qos prefetch) is
// delivery.window. See docs/connectors/rabbitmq.md.
type RabbitMQSource struct {
	// URL is the AMQP URL, amqp://user:pass@host:5672/vhost or amqps://...
	// (a secret: it may hold credentials).
	URL Secret `yaml:"url" json:"url" jsonschema:"required"`
	// Queue is the queue to consume.
	Queue string `yaml:"queue" json:"queue" jsonschema:"required"`
	// Declare declares the queue (and the exchanges and bindings listed)
	// when connecting, idempotently; the broker refuses a queue that already
	// exists with other settings. Without it the queue must exist (it is
	// checked passively).
	Declare *RabbitMQDeclare `yaml:"declare,omitempty" json:"declare,omitempty"`
	// OnNack is what happens to a message Sluice gives back unprocessed
	// (shutdown before it finished, or a nack by the runtime): requeue (back
	// to the queue, redelivered at once) or dead-letter (rejected without
	// requeue, so the queue's dead-letter exchange gets it; a queue without
	// one drops it). Default requeue.
	OnNack string `yaml:"onNack,omitempty" json:"onNack,omitempty" jsonschema:"enum=requeue,enum=dead-letter"`
	// KeyFrom is the ordering key of a message (delivery.ordering: key):
	// routingKey, header:NAME (a message header) or none. Default routingKey.
	KeyFrom string `yaml:"keyFrom,omitempty" json:"keyFrom,omitempty"`
	// EventType is the CloudEvents type given to messages that are not
	// already CloudEvents. Default dev.sluice.rabbitmq.message.
	EventType string `yaml:"eventType,omitempty" json:"eventType,omitempty"`
	// Heartbeat is the AMQP heartbeat interval: how fast a dead connection
	// is noticed. Default 10s.
	Heartbeat Duration `yaml:"heartbeat,omitempty" json:"heartbeat,omitempty"`
	// TLS secures the connection (also enabled by an amqps:// URL).
	TLS *TLSSpec `yaml:"tls,omitempty" json:"tls,omitempty"`
}

// RabbitMQDeclare is the topology a RabbitMQ source declares: its queue,
// exchanges, and bindings of the queue to exchanges.
type RabbitMQDeclare struct {
	// Queue holds the settings of the consumed queue.
	Queue RabbitMQQueue `yaml:"queue,omitempty" json:"queue,omitempty"`
	// Exchanges are declared before the bindings.
	Exchanges []RabbitMQExchange `yaml:"exchanges,omitempty" json:"exchanges,omitempty"`
	// Bindings bind the queue to exchanges.
	Bindings []RabbitMQBinding `yaml:"bindings,omitempty" json:"bindings,omitempty"`
}

// RabbitMQQueue is how the consumed queue is declared.
type RabbitMQQueue struct {
	// Type is classic or quorum (replicated; supports deliveryLimit).
	// Default classic.
	Type string `yaml:"type,omitempty" json:"type,omitempty" jsonschema:"enum=classic,enum=quorum"`
	// Durable queues survive a broker restart. Default true; quorum queues
	// are always durable.
	Durable *bool `yaml:"durable,omitempty" json:"durable,omitempty"`
	// SingleActiveConsumer (x-single-active-consumer) lets one consumer at
	// a time receive the queue's messages, the others standing by: the way
	// to consume in queue order with several Sluice instances.
	SingleActiveConsumer bool `yaml:"singleActiveConsumer,omitempty" json:"singleActiveConsumer,omitempty"`
	// DeadLetterExchange (x-dead-letter-exchange) receives rejected,
	// expired and over-limit messages; required for onNack: dead-letter.
	DeadLetterExchange string `yaml:"deadLetterExchange,omitempty" json:"deadLetterExchange,omitempty"`
	// DeadLetterRoutingKey (x-dead-letter-routing-key) replaces the routing
	// key of dead-lettered messages.
	DeadLetterRoutingKey string `yaml:"deadLetterRoutingKey,omitempty" json:"deadLetterRoutingKey,omitempty"`
	// DeliveryLimit (x-delivery-limit, quorum queues only) dead-letters
	// (or drops) a message after this many redeliveries.
	DeliveryLimit int `yaml:"deliveryLimit,omitempty" json:"deliveryLimit,omitempty" jsonschema:"minimum=0"`
	// MessageTTL (x-message-ttl, millisecond precision) expires messages
	// that waited longer in the queue.
	MessageTTL Duration `yaml:"messageTTL,omitempty" json:"messageTTL,omitempty"`
}

// RabbitMQExchange is an exchange a RabbitMQ source declares.
type RabbitMQExchange struct {
	// Name of the exchange.
	Name string `yaml:"name" json:"name" jsonschema:"required"`
	// Type is direct, fanout, topic or headers. Default direct.
	Type string `yaml:"type,omitempty" json:"type,omitempty" jsonschema:"enum=direct,enum=fanout,enum=topic,enum=headers"`
	// Durable exchanges survive a broker restart. Default true.
	Durable *bool `yaml:"durable,omitempty" json:"durable,omitempty"`
}

// RabbitMQBinding binds the consumed queue to an exchange.
type RabbitMQBinding struct {
	// Exchange to bind to.
	Exchange string `yaml:"exchange" json:"exchange" jsonschema:"required"`
	// RoutingKey (binding key) of the binding; topic exchanges take
	// patterns such as "order.#".
	RoutingKey string `yaml:"routingKey,omitempty" json:"routingKey,omitempty"`
}

// RabbitMQSink publishes events (CloudEvents AMQP binary content mode,
// persistent, mandatory) and returns only once the broker confirmed them
// (publisher confirms). An unroutable event fails the write.
type RabbitMQSink struct {
	// URL is the AMQP URL (a secret: it may hold credentials).
	URL Secret `yaml:"url" json:"url" jsonschema:"required"`
	// Exchange to publish to ("" = the default exchange, which routes to
	// the queue named by the routing key).
	Exchange string `yaml:"exchange,omitempty" json:"exchange,omitempty"`
	// RoutingKey of published messages, and the fallback for events
	// without the routingKeyFrom attribute.
	RoutingKey string `yaml:"routingKey,omitempty" json:"routingKey,omitempty"`
	// RoutingKeyFrom takes the routing key from each event: type, subject,
	// source, id or extension:NAME.
	RoutingKeyFrom string `yaml:"routingKeyFrom,omitempty" json:"routingKeyFrom,omitempty"`
	// Heartbeat is the AMQP heartbeat interval. Default 10s.
	Heartbeat Duration `yaml:"heartbeat,omitempty" json:"heartbeat,omitempty"`
	// TLS secures the connection (also enabled by an amqps:// URL).
	TLS *TLSSpec `yaml:"tls,omitempty" json:"tls,omitempty"`
}

func validateRabbitMQSource(v *validator, path string, s *RabbitMQSource) {
	validateAMQPURL(v, path+".url", s.URL)
	v.required(path+".queue", s.Queue)
	v.oneOf(path+".onNack", s.OnNack, RabbitOnNackRequeue, RabbitOnNackDeadLetter)
	switch k := s.KeyFrom; {
	case k == RabbitKeyFromRoutingKey, k == RabbitKeyFromNone:
	case strings.HasPrefix(k, RabbitKeyFromHeaderPrefix) && len(k) > len(RabbitKeyFromHeaderPrefix):
	default:
		v.errorf(path+".keyFrom", "invalid value %q: want routingKey, header:NAME or none", k)
	}
	v.required(path+".eventType", s.EventType)
	v.positive(path+".heartbeat", s.Heartbeat)
	if s.TLS != nil {
		validateTLS(v, path+".tls", s.TLS)
	}
	d := s.Declare
	if d == nil {
		return
	}
	dp := path + ".declare"
	q := d.Queue
	qp := dp + ".queue"
	v.oneOf(qp+".type", q.Type, RabbitQueueClassic, RabbitQueueQuorum)
	if q.Type == RabbitQueueQuorum && q.Durable != nil && !*q.Durable {
		v.errorf(qp+".durable", "quorum queues are always durable")
	}
	if q.DeliveryLimit < 0 {
		v.errorf(qp+".deliveryLimit", "must not be negative")
	} else if q.DeliveryLimit > 0 && q.Type != RabbitQueueQuorum {
		v.errorf(qp+".deliveryLimit", "deliveryLimit needs type: quorum")
	}
	v.notNegative(qp+".messageTTL", q.MessageTTL)
	if q.MessageTTL > 0 && q.MessageTTL < Duration(time.Millisecond) {
		v.errorf(qp+".messageTTL", "must be at least 1ms")
	}
	if q.DeadLetterRoutingKey != "" && q.DeadLetterExchange == "" {
		v.errorf(qp+".deadLetterRoutingKey", "needs deadLetterExchange")
	}
	if s.OnNack == RabbitOnNackDeadLetter && q.DeadLetterExchange == "" {
		v.errorf(qp+".deadLetterExchange", "onNack: dead-letter needs a dead-letter exchange, or nacked messages are dropped")
	}
	for i, e := range d.Exchanges {
		ep := indexPath(dp+".exchanges", i)
		if v.required(ep+".name", e.Name) && strings.HasPrefix(e.Name, "amq.") {
			v.errorf(ep+".name", "exchange names starting with \"amq.\" are reserved by the broker")
		}
		v.oneOf(ep+".type", e.Type, rabbitExchangeTypes...)
	}
	for i, b := range d.Bindings {
		v.required(indexPath(dp+".bindings", i)+".exchange", b.Exchange)
	}
}

func validateRabbitMQSink(v *validator, path string, s *RabbitMQSink) {
	validateAMQPURL(v, path+".url", s.URL)
	if f := s.RoutingKeyFrom; f != "" {
		name, isExt := strings.CutPrefix(f, RabbitRoutingKeyFromExtensionPrefix)
		switch {
		case isExt && attributeRE.MatchString(name):
		case !isExt && slices.Contains(rabbitRoutingKeyAttrs, f):
		default:
			v.errorf(path+".routingKeyFrom", "invalid value %q: want type, subject, source, id or extension:NAME", f)
		}
	}
	if s.Exchange == "" && s.RoutingKey == "" && s.RoutingKeyFrom == "" {
		v.missing(path+".routingKey", "the default exchange routes by routing key: name the queue, or set exchange or routingKeyFrom")
	}
	v.positive(path+".heartbeat", s.Heartbeat)
	if s.TLS != nil {
		validateTLS(v, path+".tls", s.TLS)
	}
}

// validateAMQPURL checks an AMQP URL without ever quoting it (it may hold
// a password).
func validateAMQPURL(v *validator, path string, s Secret) {
	raw := s.Value()
	if raw == "" {
		if s.IsZero() {
			v.required(path, "")
		} else {
			v.errorf(path, "must not be empty")
		}
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		v.errorf(path, "invalid AMQP URL: want amqp://[user:pass@]host[:port][/vhost]")
	case u.Scheme != "amqp" && u.Scheme != "amqps":
		v.errorf(path, "invalid AMQP URL: scheme must be amqp or amqps")
	case u.Hostname() == "":
		v.errorf(path, "invalid AMQP URL: no host")
	}
}

func rabbitMQSourceDefaults(s *RabbitMQSource) {
	setDefault(&s.OnNack, DefaultRabbitOnNack)
	setDefault(&s.KeyFrom, DefaultRabbitKeyFrom)
	setDefault(&s.EventType, DefaultRabbitEventType)
	setDefault(&s.Heartbeat, Duration(DefaultRabbitHeartbeat))
	if d := s.Declare; d != nil {
		setDefault(&d.Queue.Type, DefaultRabbitQueueType)
		rabbitDefaultTrue(&d.Queue.Durable)
		for i := range d.Exchanges {
			setDefault(&d.Exchanges[i].Type, DefaultRabbitExchangeType)
			rabbitDefaultTrue(&d.Exchanges[i].Durable)
		}
	}
}

func rabbitMQSinkDefaults(s *RabbitMQSink) {
	setDefault(&s.Heartbeat, Duration(DefaultRabbitHeartbeat))
}

// rabbitDefaultTrue sets an unset optional boolean to true.
func rabbitDefaultTrue(b **bool) {
	if *b == nil {
		t := true
		*b = &t
	}
}
