package pipelines

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// rabbitFullDoc sets every RabbitMQ field.
const rabbitFullDoc = `apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: rabbit-full}
spec:
  source:
    rabbitmq:
      url: "${env:AMQP}"
      queue: orders
      declare:
        queue:
          type: quorum
          durable: true
          singleActiveConsumer: true
          deadLetterExchange: orders.dlx
          deadLetterRoutingKey: orders.retry
          deliveryLimit: 5
          messageTTL: 1h
        exchanges:
        - {name: orders, type: topic, durable: false}
        - {name: orders.dlx}
        bindings:
        - {exchange: orders, routingKey: "order.#"}
      onNack: dead-letter
      keyFrom: "header:tenant"
      eventType: com.acme.order
      heartbeat: 5s
      tls: {enabled: true, caFile: ca.pem}
  function: {url: "http://f/"}
  results:
    onSuccess:
    - rabbitmq:
        url: "${env:AMQP}"
        exchange: results
        routingKey: fallback
        routingKeyFrom: "extension:region"
        heartbeat: 3s
        tls: {enabled: true, caFile: ca.pem}
    onFailure:
    - rabbitmq: {url: "amqp://localhost/", routingKey: orders-dlq}
`

func rabbitLoader() Loader {
	l := testLoader()
	l.LookupEnv = func(name string) (string, bool) {
		if name == "AMQP" {
			return "amqp://u:p@rabbit:5672/prod", true
		}
		return "", false
	}
	return l
}

func TestLoadRabbitMQ(t *testing.T) {
	cfg, err := rabbitLoader().Parse(filepath.FromSlash("conf/rabbit.yaml"), []byte(rabbitFullDoc))
	if err != nil {
		t.Fatal(err)
	}
	f, tr := false, true
	url := NewSecret("${env:AMQP}", "amqp://u:p@rabbit:5672/prod")
	tls := &TLSSpec{Enabled: true, CAFile: filepath.FromSlash("conf/ca.pem")}
	wantSrc := &RabbitMQSource{
		URL:   url,
		Queue: "orders",
		Declare: &RabbitMQDeclare{
			Queue: RabbitMQQueue{
				Type: RabbitQueueQuorum, Durable: &tr, SingleActiveConsumer: true,
				DeadLetterExchange: "orders.dlx", DeadLetterRoutingKey: "orders.retry",
				DeliveryLimit: 5, MessageTTL: Duration(time.Hour),
			},
			Exchanges: []RabbitMQExchange{
				{Name: "orders", Type: "topic", Durable: &f},
				{Name: "orders.dlx", Type: DefaultRabbitExchangeType, Durable: &tr},
			},
			Bindings: []RabbitMQBinding{{Exchange: "orders", RoutingKey: "order.#"}},
		},
		OnNack:    RabbitOnNackDeadLetter,
		KeyFrom:   "header:tenant",
		EventType: "com.acme.order",
		Heartbeat: Duration(5 * time.Second),
		TLS:       tls,
	}
	p := cfg.Pipelines[0]
	if got := p.Spec.Source.RabbitMQ; !reflect.DeepEqual(got, wantSrc) {
		t.Errorf("source:\n%#v\nwant\n%#v", got, wantSrc)
	}
	wantOK := &RabbitMQSink{URL: url, Exchange: "results", RoutingKey: "fallback", RoutingKeyFrom: "extension:region",
		Heartbeat: Duration(3 * time.Second), TLS: &TLSSpec{Enabled: true, CAFile: filepath.FromSlash("conf/ca.pem")}}
	if got := p.Spec.Results.OnSuccess[0].RabbitMQ; !reflect.DeepEqual(got, wantOK) {
		t.Errorf("onSuccess:\n%#v\nwant\n%#v", got, wantOK)
	}
	wantDLQ := &RabbitMQSink{URL: NewSecret("", "amqp://localhost/"), RoutingKey: "orders-dlq", Heartbeat: Duration(DefaultRabbitHeartbeat)}
	if got := p.Spec.Results.OnFailure[0].RabbitMQ; !reflect.DeepEqual(got, wantDLQ) {
		t.Errorf("onFailure:\n%#v\nwant\n%#v", got, wantDLQ)
	}
}

func TestRabbitMQDefaults(t *testing.T) {
	p := &Pipeline{
		Metadata: Metadata{Name: "p"},
		Spec: PipelineSpec{
			Source: SourceSpec{RabbitMQ: &RabbitMQSource{URL: NewSecret("", "amqp://h/"), Queue: "q",
				Declare: &RabbitMQDeclare{Exchanges: []RabbitMQExchange{{Name: "x"}}}}},
			Function: &FunctionSpec{URL: "http://f/"},
			Results:  ResultsSpec{OnSuccess: []RouteSpec{{RabbitMQ: &RabbitMQSink{URL: NewSecret("", "amqp://h/"), RoutingKey: "out"}}}},
		},
	}
	ApplyDefaults(p)
	tr := true
	want := &RabbitMQSource{
		URL: NewSecret("", "amqp://h/"), Queue: "q",
		Declare: &RabbitMQDeclare{
			Queue:     RabbitMQQueue{Type: RabbitQueueClassic, Durable: &tr},
			Exchanges: []RabbitMQExchange{{Name: "x", Type: "direct", Durable: &tr}},
		},
		OnNack: RabbitOnNackRequeue, KeyFrom: RabbitKeyFromRoutingKey, EventType: DefaultRabbitEventType,
		Heartbeat: Duration(DefaultRabbitHeartbeat),
	}
	if got := p.Spec.Source.RabbitMQ; !reflect.DeepEqual(got, want) {
		t.Errorf("source defaults:\n%#v\nwant\n%#v", got, want)
	}
	if got := p.Spec.Results.OnSuccess[0].RabbitMQ.Heartbeat; got != Duration(DefaultRabbitHeartbeat) {
		t.Errorf("sink heartbeat = %v", got)
	}
	if err := Validate(p); err != nil {
		t.Errorf("Validate after defaults: %v", err)
	}
	// Idempotent.
	before := *p.Spec.Source.RabbitMQ
	ApplyDefaults(p)
	if !reflect.DeepEqual(*p.Spec.Source.RabbitMQ, before) {
		t.Errorf("ApplyDefaults is not idempotent")
	}
}

func TestRabbitMQErrors(t *testing.T) {
	const fn = "  function: {url: \"http://f/\"}\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "missing url and queue",
			yaml: header + "  source:\n    rabbitmq: {}\n" + fn,
			want: []string{
				`p.yaml:6:5: spec.source.rabbitmq.url: missing required field`,
				`p.yaml:6:5: spec.source.rabbitmq.queue: missing required field`,
			},
		},
		{
			name: "bad url, enums and durations",
			yaml: header + `  source:
    rabbitmq:
      url: "http://u:secret@h/"
      queue: q
      onNack: drop
      keyFrom: "header:"
      heartbeat: 0.5
` + fn,
			want: []string{
				`p.yaml:7:12: spec.source.rabbitmq.url: invalid AMQP URL: scheme must be amqp or amqps`,
				`p.yaml:9:15: spec.source.rabbitmq.onNack: invalid value "drop": want requeue or dead-letter`,
				`p.yaml:10:16: spec.source.rabbitmq.keyFrom: invalid value "header:": want routingKey, header:NAME or none`,
				`p.yaml:11:18: spec.source.rabbitmq.heartbeat: expected a duration such as "200ms", got a number`,
			},
		},
		{
			name: "declare rules",
			yaml: header + `  source:
    rabbitmq:
      url: amqp://h/
      queue: q
      onNack: dead-letter
      declare:
        queue: {type: classic, deliveryLimit: 3, messageTTL: 100us, deadLetterRoutingKey: k}
        exchanges: [{name: amq.mine, type: fanout}, {name: "", type: x-delayed}]
        bindings: [{routingKey: k}]
` + fn,
			want: []string{
				`p.yaml:11:16: spec.source.rabbitmq.declare.queue.deadLetterExchange: onNack: dead-letter needs a dead-letter exchange, or nacked messages are dropped`,
				`p.yaml:11:47: spec.source.rabbitmq.declare.queue.deliveryLimit: deliveryLimit needs type: quorum`,
				`p.yaml:11:62: spec.source.rabbitmq.declare.queue.messageTTL: must be at least 1ms`,
				`p.yaml:11:91: spec.source.rabbitmq.declare.queue.deadLetterRoutingKey: needs deadLetterExchange`,
				`p.yaml:12:28: spec.source.rabbitmq.declare.exchanges[0].name: exchange names starting with "amq." are reserved by the broker`,
				`p.yaml:12:60: spec.source.rabbitmq.declare.exchanges[1].name: must not be empty`,
				`p.yaml:12:70: spec.source.rabbitmq.declare.exchanges[1].type: invalid value "x-delayed": want direct, fanout, topic or headers`,
				`p.yaml:13:20: spec.source.rabbitmq.declare.bindings[0].exchange: missing required field`,
			},
		},
		{
			name: "quorum cannot be transient",
			yaml: header + `  source:
    rabbitmq:
      url: amqp://h/
      queue: q
      declare: {queue: {type: quorum, durable: false}}
` + fn,
			want: []string{
				`p.yaml:9:48: spec.source.rabbitmq.declare.queue.durable: quorum queues are always durable`,
			},
		},
		{
			name: "sink rules",
			yaml: header + okSpec + `  results:
    onSuccess:
    - rabbitmq: {url: amqp://h/}
    - rabbitmq: {url: "amqps:///", exchange: x, routingKeyFrom: time}
    - rabbitmq: {url: amqp://h/, exchange: x, routingKeyFrom: "extension:bad-name"}
`,
			want: []string{
				`p.yaml:10:7: spec.results.onSuccess[0].rabbitmq.routingKey: missing required field (the default exchange routes by routing key: name the queue, or set exchange or routingKeyFrom)`,
				`p.yaml:11:23: spec.results.onSuccess[1].rabbitmq.url: invalid AMQP URL: no host`,
				`p.yaml:11:65: spec.results.onSuccess[1].rabbitmq.routingKeyFrom: invalid value "time": want type, subject, source, id or extension:NAME`,
				`p.yaml:12:63: spec.results.onSuccess[2].rabbitmq.routingKeyFrom: invalid value "extension:bad-name": want type, subject, source, id or extension:NAME`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testLoader().Parse("p.yaml", []byte(tt.yaml))
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Parse error = %v (%T), want a *LoadError", err, err)
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestRabbitMQURLNotQuoted: an invalid URL's credentials never reach the
// error message.
func TestRabbitMQURLNotQuoted(t *testing.T) {
	doc := header + `  source:
    rabbitmq: {url: "ftp://user:s3cr3t@h/", queue: q}
  function: {url: "http://f/"}
`
	_, err := testLoader().Parse("p.yaml", []byte(doc))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("error %v: want one that does not quote the password", err)
	}
}
