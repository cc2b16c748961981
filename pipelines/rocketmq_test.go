package pipelines

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// rocketmqSpec is a minimal valid RocketMQ spec (lines 5-7 after header).
const rocketmqSpec = `  source:
    rocketmq: {nameServers: ["127.0.0.1:9876"], topic: orders, group: billing}
  function: {url: "http://f/"}
`

func TestRocketMQLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "missing required fields",
			yaml: header + `  source:
    rocketmq: {tags: a}
  function: {url: "http://f/"}
`,
			want: []string{
				`p.yaml:6:5: spec.source.rocketmq.nameServers: missing required field`,
				`p.yaml:6:5: spec.source.rocketmq.topic: missing required field`,
				`p.yaml:6:5: spec.source.rocketmq.group: missing required field`,
			},
		},
		{
			name: "bad values",
			yaml: header + `  source:
    rocketmq:
      nameServers: ["127.0.0.1", "h:0"]
      topic: "%RETRY%x"
      group: "a b"
      start: newest
      retry: native
      maxReconsumeTimes: -1
      consumeTimeout: -1s
      acl: {accessKey: ak}
  function: {url: "http://f/"}
`,
			want: []string{
				`p.yaml:7:21: spec.source.rocketmq.nameServers[0]: invalid name server address "127.0.0.1": want host:port`,
				`p.yaml:7:34: spec.source.rocketmq.nameServers[1]: invalid name server address "h:0": want host:port`,
				`p.yaml:8:14: spec.source.rocketmq.topic: invalid topic "%RETRY%x": want letters, digits, '_' and '-', at most 127 characters`,
				`p.yaml:9:14: spec.source.rocketmq.group: invalid group "a b": want letters, digits, '_' and '-', at most 127 characters`,
				`p.yaml:10:14: spec.source.rocketmq.start: invalid value "newest": want earliest or latest`,
				`p.yaml:11:14: spec.source.rocketmq.retry: invalid value "native": want sluice or broker`,
				`p.yaml:12:26: spec.source.rocketmq.maxReconsumeTimes: must be at least 1, got -1`,
				`p.yaml:13:23: spec.source.rocketmq.consumeTimeout: negative duration "-1s"`,
				`p.yaml:14:7: spec.source.rocketmq.acl.secretKey: missing required field`,
			},
		},
		{
			name: "tags and sql",
			yaml: header + `  source:
    rocketmq: {nameServers: ["n:9876"], topic: t, group: g, tags: "a ||", sql: "a > 1"}
  function: {url: "http://f/"}
`,
			want: []string{
				`p.yaml:6:67: spec.source.rocketmq.tags: invalid tag expression "a ||": want tags separated by "||", or "*"`,
				`p.yaml:6:80: spec.source.rocketmq.sql: tags and sql cannot both be set: a subscription has one selector`,
			},
		},
		{
			name: "sink without a RocketMQ source",
			yaml: header + okSpec + `  results:
    onSuccess: [{rocketmq: {topic: out, tag: "a|b", retries: -1, sendTimeout: 0s}}]
    onFailure: [{rocketmq: {nameServers: [], topic: dlq, producerGroup: "p/1"}}]
`,
			want: []string{
				`p.yaml:9:18: spec.results.onSuccess[0].rocketmq.nameServers: missing required field (there is no RocketMQ source to take them from)`,
				`p.yaml:9:46: spec.results.onSuccess[0].rocketmq.tag: invalid tag "a|b": no '|', no surrounding spaces`,
				`p.yaml:9:62: spec.results.onSuccess[0].rocketmq.retries: must be at least 0, got -1`,
				`p.yaml:10:42: spec.results.onFailure[0].rocketmq.nameServers: must not be empty`,
				`p.yaml:10:73: spec.results.onFailure[0].rocketmq.producerGroup: invalid producer group "p/1": want letters, digits, '_' and '-', at most 127 characters`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testLoader().Parse("p.yaml", []byte(tt.yaml))
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Parse error = %v, want a *LoadError", err)
			}
			got := strings.Split(err.Error(), "\n")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestRocketMQLoadFull(t *testing.T) {
	doc := header + `  source:
    rocketmq:
      nameServers: ["10.0.0.1:9876", "10.0.0.2:9876"]
      topic: orders
      group: billing
      sql: "region = 'eu' AND amount > 10"
      start: latest
      eventType: com.acme.order
      keyProperty: customer
      retry: broker
      maxReconsumeTimes: 3
      consumeTimeout: 1h
      acl: {accessKey: "${env:TOKEN}", secretKey: "${env:PASSWORD}"}
  function: {url: "http://f/"}
  results:
    onSuccess:
    - rocketmq: {topic: billed, producerGroup: billing-out, key: customer, tag: billed, tagAttribute: type, retries: 5, sendTimeout: 2s}
    onFailure:
    - rocketmq: {nameServers: ["10.0.0.9:9876"], topic: dlq}
`
	cfg, err := testLoader().Parse("p.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	spec := cfg.Pipelines[0].Spec
	src := spec.Source.RocketMQ
	acl := src.ACL
	if acl == nil || acl.AccessKey.Value() != "Bearer tok-123" || acl.SecretKey.Value() != "hunter2" {
		t.Fatalf("acl = %+v", acl)
	}
	wantSrc := RocketMQSource{
		NameServers: []string{"10.0.0.1:9876", "10.0.0.2:9876"}, Topic: "orders", Group: "billing",
		SQL: "region = 'eu' AND amount > 10", Start: StartLatest, EventType: "com.acme.order", KeyProperty: "customer",
		Retry: RocketMQRetryBroker, MaxReconsumeTimes: 3, ConsumeTimeout: Duration(3600e9), ACL: acl,
	}
	if !reflect.DeepEqual(*src, wantSrc) {
		t.Errorf("source = %+v\nwant %+v", *src, wantSrc)
	}
	// The first sink takes the source's name servers and ACL.
	wantOut := RocketMQSink{
		NameServers: src.NameServers, Topic: "billed", ProducerGroup: "billing-out", Key: "customer",
		Tag: "billed", TagAttribute: "type", Retries: 5, SendTimeout: Duration(2e9), ACL: acl,
	}
	if got := *spec.Results.OnSuccess[0].RocketMQ; !reflect.DeepEqual(got, wantOut) {
		t.Errorf("onSuccess sink = %+v\nwant %+v", got, wantOut)
	}
	// The second has its own name servers: no ACL is taken.
	wantDLQ := RocketMQSink{
		NameServers: []string{"10.0.0.9:9876"}, Topic: "dlq", ProducerGroup: DefaultRocketMQProducerGroup, Key: DefaultSinkKey,
		Retries: DefaultRocketMQSendRetries, SendTimeout: Duration(DefaultRocketMQSendTimeout),
	}
	if got := *spec.Results.OnFailure[0].RocketMQ; !reflect.DeepEqual(got, wantDLQ) {
		t.Errorf("onFailure sink = %+v\nwant %+v", got, wantDLQ)
	}
}

func TestRocketMQDefaults(t *testing.T) {
	cfg, err := testLoader().Parse("p.yaml", []byte(header+rocketmqSpec+`  results:
    onSuccess: [{rocketmq: {topic: out}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	spec := cfg.Pipelines[0].Spec
	want := RocketMQSource{
		NameServers: []string{"127.0.0.1:9876"}, Topic: "orders", Group: "billing",
		Start: DefaultRocketMQStart, EventType: DefaultRocketMQEventType, Retry: DefaultRocketMQRetry,
		MaxReconsumeTimes: DefaultRocketMQMaxReconsumeTimes, ConsumeTimeout: Duration(DefaultRocketMQConsumeTimeout),
	}
	if got := *spec.Source.RocketMQ; !reflect.DeepEqual(got, want) {
		t.Errorf("source = %+v\nwant %+v", got, want)
	}
	sink := spec.Results.OnSuccess[0].RocketMQ
	if !reflect.DeepEqual(sink.NameServers, want.NameServers) || sink.ACL != nil {
		t.Errorf("sink name servers/acl = %v/%v, want the source's", sink.NameServers, sink.ACL)
	}
	// Defaults are idempotent and do not share the source's slice.
	before := *sink
	ApplyDefaults(cfg.Pipelines[0])
	if !reflect.DeepEqual(*sink, before) {
		t.Errorf("second ApplyDefaults changed the sink: %+v", *sink)
	}
	sink.NameServers[0] = "changed:1"
	if spec.Source.RocketMQ.NameServers[0] != "127.0.0.1:9876" {
		t.Errorf("sink shares the source's nameServers slice")
	}
}

func TestRocketMQValidateCodeBuilt(t *testing.T) {
	p := &Pipeline{Metadata: Metadata{Name: "p"}, Spec: PipelineSpec{
		Source:   SourceSpec{RocketMQ: &RocketMQSource{NameServers: []string{"n:9876"}, Topic: "t", Group: "g", Tags: "a || b"}},
		Function: &FunctionSpec{URL: "http://f/"},
		Results:  ResultsSpec{OnFailure: []RouteSpec{{RocketMQ: &RocketMQSink{Topic: "dlq"}}}},
	}}
	ApplyDefaults(p)
	if err := Validate(p); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	p.Spec.Results.OnFailure[0].RocketMQ.NameServers = []string{"bad"}
	p.Spec.Source.RocketMQ.Retry = "both"
	want := "spec.source.rocketmq.retry: invalid value \"both\": want sluice or broker\n" +
		"spec.results.onFailure[0].rocketmq.nameServers[0]: invalid name server address \"bad\": want host:port"
	if err := Validate(p); err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want\n%s", err, want)
	}
}

func TestRocketMQSchemaAndReference(t *testing.T) {
	ref, err := Reference()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## RocketMQSource", "## RocketMQSink", "## RocketMQACL", "`spec.source.rocketmq.retry`"} {
		if !strings.Contains(string(ref), want) {
			t.Errorf("reference lacks %q", want)
		}
	}
	schema, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"RocketMQSource"`, `"maxReconsumeTimes"`, `"tagAttribute"`} {
		if !strings.Contains(string(schema), want) {
			t.Errorf("schema lacks %s", want)
		}
	}
}
