package pipelines

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// header starts every document of the error table, so that spec lines
// start at line 5.
const header = "apiVersion: sluice.dev/v1\nkind: Pipeline\nmetadata: {name: p1}\nspec:\n"

// okSpec is a minimal valid spec (lines 5-7).
const okSpec = `  source:
    kafka: {brokers: ["k:9092"], topics: [t], group: g}
  function: {url: "http://f/"}
`

// testLoader resolves ${env:X} to "env-X" for X in a fixed set and
// ${file:...} through a fixed map, so tests touch neither the process
// environment nor the disk.
func testLoader() Loader {
	return Loader{
		LookupEnv: func(name string) (string, bool) {
			switch name {
			case "TOKEN", "PASSWORD", "WHSEC":
				return map[string]string{"TOKEN": "Bearer tok-123", "PASSWORD": "hunter2", "WHSEC": "whsec_c2VjcmV0LWtleQ=="}[name], true
			}
			return "", false
		},
		ReadFile: func(path string) ([]byte, error) {
			if path == filepath.FromSlash("conf/secrets/pw") {
				return []byte("file-pass\n"), nil
			}
			return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
		},
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "syntax error",
			yaml: "a: [1, 2\n",
			want: []string{`p.yaml:1:4: sequence end token ']' not found`},
		},
		{
			name: "duplicate key",
			yaml: header + okSpec + "  function: {url: \"http://g/\"}\n",
			want: []string{`p.yaml:8:3: mapping key "function" already defined at [7:3]`},
		},
		{
			name: "document not a mapping",
			yaml: "- a\n- b\n",
			want: []string{`p.yaml:1:1: expected a mapping, got a sequence`},
		},
		{
			name: "wrong apiVersion",
			yaml: "apiVersion: sluice.dev/v2\nkind: Pipeline\nmetadata: {name: p1}\nspec:\n" + okSpec,
			want: []string{`p.yaml:1:13: apiVersion: unsupported apiVersion "sluice.dev/v2": want "sluice.dev/v1"`},
		},
		{
			name: "missing apiVersion and kind",
			yaml: "metadata: {name: p1}\n",
			want: []string{
				`p.yaml:1:1: apiVersion: missing required field`,
				`p.yaml:1:1: kind: missing required field`,
			},
		},
		{
			name: "unknown kind",
			yaml: "apiVersion: sluice.dev/v1\nkind: Topic\nmetadata: {name: acme}\n",
			want: []string{`p.yaml:2:7: kind: unknown kind "Topic": want Bus, Function, Pipeline or Tenant`},
		},
		{
			name: "unknown fields at every depth",
			yaml: header + `  source:
    kafka: {brokers: ["k:9092"], topics: [t], group: g, partitions: 3}
  function: {url: "http://f/", timeot: 1s}
  delivery:
    retry: {maxdelay: 1s}
  results:
    onFailure: [{kafka: {topic: dlq, compression: zstd}}]
  extra: true
`,
			want: []string{
				`p.yaml:6:57: spec.source.kafka.partitions: unknown field "partitions"`,
				`p.yaml:7:32: spec.function.timeot: unknown field "timeot" (did you mean "timeout"?)`,
				`p.yaml:9:13: spec.delivery.retry.maxdelay: unknown field "maxdelay" (did you mean "maxDelay"?)`,
				`p.yaml:11:38: spec.results.onFailure[0].kafka.compression: unknown field "compression"`,
				`p.yaml:12:3: spec.extra: unknown field "extra"`,
			},
		},
		{
			name: "wrong types",
			yaml: header + `  source:
    kafka: {brokers: "k:9092", topics: [t], group: 7}
  function: {url: "http://f/", headers: [a]}
  delivery:
    window: many
    concurrency: {max: 1.5}
    retry: true
`,
			want: []string{
				`p.yaml:6:22: spec.source.kafka.brokers: expected a sequence, got a string`,
				`p.yaml:6:52: spec.source.kafka.group: expected a string, got an integer (quote it)`,
				`p.yaml:7:41: spec.function.headers: expected a mapping, got a sequence`,
				`p.yaml:9:13: spec.delivery.window: expected an integer, got a string`,
				`p.yaml:10:24: spec.delivery.concurrency.max: expected an integer, got a number`,
				`p.yaml:11:12: spec.delivery.retry: expected a mapping, got a boolean`,
			},
		},
		{
			name: "bad durations",
			yaml: header + okSpec + `  delivery:
    retry: {delay: 2x, maxDelay: -1s, retryAfterMax: 60}
    maxEventAge: [1h]
`,
			want: []string{
				`p.yaml:9:20: spec.delivery.retry.delay: invalid duration "2x"`,
				`p.yaml:9:34: spec.delivery.retry.maxDelay: negative duration "-1s"`,
				`p.yaml:9:54: spec.delivery.retry.retryAfterMax: invalid duration 60: a unit is required, e.g. "60s"`,
				`p.yaml:10:18: spec.delivery.maxEventAge: expected a duration such as "200ms", got a sequence`,
			},
		},
		{
			name: "missing required fields",
			yaml: `apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {tenant: acme}
spec:
  source:
    kafka:
      start: latest
  results:
    onSuccess:
    - kafka: {}
`,
			want: []string{
				`p.yaml:3:1: metadata.name: missing required field`,
				`p.yaml:6:5: spec.source.kafka.brokers: missing required field`,
				`p.yaml:6:5: spec.source.kafka.topics: missing required field`,
				`p.yaml:6:5: spec.source.kafka.group: missing required field`,
				`p.yaml:10:7: spec.results.onSuccess[0].kafka.topic: missing required field`,
			},
		},
		{
			name: "missing source and spec",
			yaml: "apiVersion: sluice.dev/v1\nkind: Pipeline\nmetadata: {name: p1}\n",
			want: []string{
				`p.yaml:1:1: spec.source: missing required field (one of kafka, rabbitmq or rocketmq)`,
				`p.yaml:1:1: spec.function: missing required field (or results.onSuccess, for the source events themselves)`,
			},
		},
		{
			name: "no function and no onSuccess route",
			yaml: header + `  source:
    kafka: {brokers: ["k:9092"], topics: [t], group: g}
  results:
    onFailure: [{kafka: {topic: dlq}}]
`,
			want: []string{
				`p.yaml:4:1: spec.function: missing required field (or results.onSuccess, for the source events themselves)`,
			},
		},
		{
			name: "bad CESQL filters, nested too",
			yaml: header + okSpec + `  filter:
    any:
    - sql: "type = "
    - sql: "subject LIKE 'a%' AND"
`,
			want: []string{
				`p.yaml:10:12: spec.filter.any[0].sql: invalid CESQL expression: incomplete or malformed`,
				`p.yaml:11:12: spec.filter.any[1].sql: invalid CESQL expression: incomplete or malformed`,
			},
		},
		{
			name: "AIMD factors out of range",
			yaml: header + okSpec + `  delivery:
    concurrency: {backoff: 0.95, latencyThreshold: -1s}
`,
			want: []string{
				`p.yaml:9:28: spec.delivery.concurrency.backoff: backoff 0.95 is outside [0.5, 0.9]`,
				`p.yaml:9:52: spec.delivery.concurrency.latencyThreshold: negative duration "-1s"`,
			},
		},
		{
			name: "empty values",
			yaml: header + `  source:
    kafka: {brokers: [], topics: [""], group: ""}
  function: {url: ""}
`,
			want: []string{
				`p.yaml:6:22: spec.source.kafka.brokers: must not be empty`,
				`p.yaml:6:35: spec.source.kafka.topics[0]: must not be empty`,
				`p.yaml:6:47: spec.source.kafka.group: must not be empty`,
				`p.yaml:7:19: spec.function.url: must not be empty`,
			},
		},
		{
			name: "exactly one kind",
			yaml: header + `  source: {}
  function: {url: "http://f/"}
  filter: {prefix: {type: a.}, suffix: {type: .b}}
  results:
    onSuccess: [{}]
    onFailure: [{log: {}, webhook: {url: "http://w/"}}]
`,
			want: []string{
				`p.yaml:5:11: spec.source: one of kafka, rabbitmq or rocketmq is required`,
				`p.yaml:7:11: spec.filter: only one of exact, prefix, suffix, all, any, not or sql may be set, got prefix and suffix`,
				`p.yaml:9:17: spec.results.onSuccess[0]: one of kafka, webhook, log, rabbitmq, rocketmq or bus is required`,
				`p.yaml:10:17: spec.results.onFailure[0]: only one of kafka, webhook, log, rabbitmq, rocketmq or bus may be set, got webhook and log`,
			},
		},
		{
			name: "nested filters",
			yaml: header + okSpec + `  filter:
    all:
    - exact: {type: x}
    - any: []
    - not: {}
    - prefix: {"bad-name": x}
`,
			want: []string{
				`p.yaml:11:12: spec.filter.all[1].any: must not be empty`,
				`p.yaml:12:12: spec.filter.all[2].not: one of exact, prefix, suffix, all, any, not or sql is required`,
				`p.yaml:13:16: spec.filter.all[3].prefix.bad-name: invalid attribute name "bad-name": want letters and digits`,
			},
		},
		{
			name: "enums",
			yaml: header + `  source:
    kafka: {brokers: ["k:9092"], topics: [t], group: g, start: newest, sasl: {mechanism: md5, username: u, password: p}}
  function: {url: "http://f/", mode: grpc}
  delivery:
    ordering: global
    retry: {backoff: linear}
  results:
    onSuccess: [{log: {format: xml}}]
`,
			want: []string{
				`p.yaml:6:64: spec.source.kafka.start: invalid value "newest": want earliest or latest`,
				`p.yaml:6:90: spec.source.kafka.sasl.mechanism: invalid value "md5": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`,
				`p.yaml:7:38: spec.function.mode: invalid value "grpc": want binary, structured or batch`,
				`p.yaml:9:15: spec.delivery.ordering: invalid value "global": want key, partition or none`,
				`p.yaml:10:22: spec.delivery.retry.backoff: invalid value "linear": want exponential or constant`,
				`p.yaml:12:32: spec.results.onSuccess[0].log.format: invalid value "xml": want json or text`,
			},
		},
		{
			name: "bad URLs and addresses",
			yaml: header + `  source:
    kafka: {brokers: ["k:9092", "k", ":9092", "k:0"], topics: [t, "a/b"], group: g, version: "3.x"}
  function: {url: /relative}
  results:
    onSuccess:
    - webhook: {url: "ftp://w/"}
    - webhook: {url: "https://user:secret@w/"}
    - webhook: {url: "http:///x"}
`,
			want: []string{
				`p.yaml:6:33: spec.source.kafka.brokers[1]: invalid broker address "k": want host:port`,
				`p.yaml:6:38: spec.source.kafka.brokers[2]: invalid broker address ":9092": want host:port`,
				`p.yaml:6:47: spec.source.kafka.brokers[3]: invalid broker address "k:0": want host:port`,
				`p.yaml:6:67: spec.source.kafka.topics[1]: invalid topic "a/b": want letters, digits, '.', '_' and '-', at most 249 characters`,
				`p.yaml:6:94: spec.source.kafka.version: invalid Kafka version "3.x": want e.g. "3.6.0"`,
				`p.yaml:7:19: spec.function.url: invalid URL "/relative": want an absolute http or https URL`,
				`p.yaml:10:22: spec.results.onSuccess[0].webhook.url: invalid URL "ftp://w/": want an absolute http or https URL`,
				`p.yaml:11:22: spec.results.onSuccess[1].webhook.url: URL contains credentials; pass them in headers with a secret reference`,
				`p.yaml:12:22: spec.results.onSuccess[2].webhook.url: invalid URL "http:///x": no host`,
			},
		},
		{
			name: "numeric bounds",
			yaml: header + okSpec + `  delivery:
    concurrency: {min: -1}
    window: -5
    retry: {attempts: -1, delay: 10s, maxDelay: 1s}
---
apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: p2}
spec:
` + okSpec + `  delivery:
    concurrency: {initial: 100, max: 10}
---
apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: p3}
spec:
` + okSpec + `  delivery:
    concurrency: {min: 20, max: 10}
`,
			want: []string{
				`p.yaml:9:24: spec.delivery.concurrency.min: must be at least 1, got -1`,
				`p.yaml:10:13: spec.delivery.window: must be at least 1, got -5`,
				`p.yaml:11:23: spec.delivery.retry.attempts: must be at least 1, got -1`,
				`p.yaml:11:49: spec.delivery.retry.maxDelay: maxDelay 1s is below delay 10s`,
				`p.yaml:21:28: spec.delivery.concurrency.initial: initial 100 is above max 10`,
				`p.yaml:31:24: spec.delivery.concurrency.min: min 20 is above max 10`,
			},
		},
		{
			name: "batch settings without batch mode",
			yaml: header + `  source: {kafka: {brokers: ["k:9092"], topics: [t], group: g}}
  function: {url: "http://f/", batch: {maxEvents: 0}}
`,
			want: []string{`p.yaml:6:39: spec.function.batch: batch settings require mode: batch`},
		},
		{
			name: "kafka sink without any brokers",
			yaml: header + `  source: {}
  function: {url: "http://f/"}
  results:
    onSuccess: [{kafka: {topic: out}}]
`,
			want: []string{
				`p.yaml:5:11: spec.source: one of kafka, rabbitmq or rocketmq is required`,
				`p.yaml:8:18: spec.results.onSuccess[0].kafka.brokers: missing required field (there is no Kafka source to take them from)`,
			},
		},
		{
			name: "tls",
			yaml: header + `  source:
    kafka:
      brokers: ["k:9092"]
      topics: [t]
      group: g
      tls: {caFile: ca.pem, certFile: c.pem}
  function: {url: "http://f/"}
`,
			want: []string{
				`p.yaml:10:12: spec.source.kafka.tls: TLS settings are given but enabled is false; set enabled: true`,
				`p.yaml:10:12: spec.source.kafka.tls: certFile and keyFile must be given together`,
			},
		},
		{
			name: "secrets",
			yaml: header + okSpec + `  results:
    onSuccess:
    - webhook:
        url: "http://w/"
        secret: "${env:UNSET_VAR}"
        headers:
          A: "${file:missing.txt}"
          B: "Bearer ${env:TOKEN}"
          C: "${vault:x}"
          D: "${env:1X}"
          E: 42
          "bad header": "${env:TOKEN}"
    - webhook: {url: "http://w/", secret: not-base64!}
`,
			want: []string{
				`p.yaml:12:17: spec.results.onSuccess[0].webhook.secret: environment variable "UNSET_VAR" is not set`,
				`p.yaml:14:14: spec.results.onSuccess[0].webhook.headers.A: reading secret file: open missing.txt: file does not exist`,
				`p.yaml:15:14: spec.results.onSuccess[0].webhook.headers.B: a secret reference must be the whole value: ${env:NAME} or ${file:PATH}`,
				`p.yaml:16:14: spec.results.onSuccess[0].webhook.headers.C: unsupported secret reference: want ${env:NAME} or ${file:PATH}`,
				`p.yaml:17:14: spec.results.onSuccess[0].webhook.headers.D: invalid environment variable name "1X" in secret reference`,
				`p.yaml:18:14: spec.results.onSuccess[0].webhook.headers.E: expected a string, got an integer (quote it)`,
				`p.yaml:19:11: spec.results.onSuccess[0].webhook.headers["bad header"]: invalid header name "bad header"`,
				`p.yaml:20:43: spec.results.onSuccess[1].webhook.secret: not a Standard Webhooks key: want "whsec_" followed by base64`,
			},
		},
		{
			// goccy/go-yaml shifts the columns after a tag in a flow
			// mapping, so tags are on lines of their own.
			name: "aliases and tags",
			yaml: header + `  source:
    kafka:
      brokers: *nope
      topics: !!seq [t]
      group: !!str 123
      clientID: !custom x
  function: {url: "http://f/"}
`,
			want: []string{
				`p.yaml:7:16: spec.source.kafka.brokers: undefined alias "nope"`,
				`p.yaml:10:17: spec.source.kafka.clientID: unsupported tag "!custom"`,
			},
		},
		{
			name: "self-referencing alias",
			yaml: header + okSpec + "  filter: &f {all: [*f]}\n",
			want: []string{`p.yaml:8:20: spec.filter` + strings.Repeat(".all[0]", 31) + `.all: nested more than 64 levels deep`},
		},
		{
			name: "duplicate names in one file, tenant matters",
			yaml: header + okSpec + "---\n" + header + okSpec +
				"---\napiVersion: sluice.dev/v1\nkind: Pipeline\nmetadata: {name: p1, tenant: other}\nspec:\n" + okSpec,
			want: []string{`p.yaml:11:18: metadata.name: duplicate Pipeline "default/p1": first defined at p.yaml:3:18`},
		},
		{
			name: "several errors in several documents at once",
			yaml: `apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: Orders_Billing}
spec:
  source:
    kafka: {brokers: ["k:9092"], topics: [t]}
  function: {url: "http://f/", timeout: 5}
---
# a comment-only document is skipped
---
apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: p2}
spec:
  source: {kafka: {brokers: ["k:9092"], topics: [t], group: g}}
  function: {url: "http://f/", mode: batch, batch: {maxEvents: -1}}
  delivery: {ordering: any}
`,
			want: []string{
				`p.yaml:3:18: metadata.name: invalid name "Orders_Billing": want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
				`p.yaml:6:5: spec.source.kafka.group: missing required field`,
				`p.yaml:7:41: spec.function.timeout: invalid duration 5: a unit is required, e.g. "5s"`,
				`p.yaml:16:64: spec.function.batch.maxEvents: must be at least 1, got -1`,
				`p.yaml:17:24: spec.delivery.ordering: invalid value "any": want key, partition or none`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := testLoader().Parse("p.yaml", []byte(tt.yaml))
			if cfg != nil {
				t.Errorf("Parse returned a config along with errors")
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Parse error = %v (%T), want a *LoadError", err, err)
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if len(le.Errors) != len(tt.want) {
				t.Errorf("got %d FieldErrors, want %d", len(le.Errors), len(tt.want))
			}
		})
	}
}

// fullDoc sets every field, with anchors, a merge key and secrets.
const fullDoc = `apiVersion: sluice.dev/v1
kind: Pipeline
metadata:
  name: full
  tenant: acme
  labels: {team: billing}
spec:
  source:
    kafka:
      brokers: &brokers ["k1:9092", "k2:9092"]
      topics: [orders, refunds]
      group: billing
      start: latest
      clientID: billing-app
      version: "3.6.0"
      eventType: com.acme.kafka
      tls: &tls
        enabled: true
        caFile: ca.pem
        certFile: /etc/tls/c.pem
        keyFile: /etc/tls/c.key
        serverName: kafka.acme
        insecureSkipVerify: false
      sasl: {mechanism: SCRAM-SHA-512, username: billing, password: "${file:secrets/pw}"}
  filter:
    any:
    - exact: {type: com.acme.order.created}
    - suffix: {subject: ".eu"}
    - not: {sql: "source = 'test'"}
    - all: [{prefix: {type: com.acme.}}]
  function:
    url: https://billing.acme/events
    mode: batch
    timeout: 5s
    headers: {Authorization: "${env:TOKEN}", X-Source: sluice}
    batch: {maxEvents: 50, linger: 1.5s}
  delivery:
    ordering: none
    concurrency: {initial: 4, min: 2, max: 64, backoff: 0.5, latencyThreshold: 2s}
    retry: {attempts: 3, backoff: constant, delay: 1s, maxDelay: 1s, retryAfterMax: 2m}
    maxEventAge: 1h30m
    window: 100
  results:
    onSuccess:
    - kafka:
        brokers: *brokers
        topic: billing-results
        key: orderid
        clientID: billing-out
        version: "3.6.0"
        tls: {<<: *tls, serverName: out.acme}
        sasl: {mechanism: PLAIN, username: out, password: "${env:PASSWORD}"}
    - webhook: {url: "http://hooks.acme:8080/x", secret: "${env:WHSEC}", headers: {X-Env: prod}, timeout: 3s}
    - log: {format: text}
    onFailure:
    - kafka: {topic: dlq}
`

// TestLoadFullExample decodes a document setting every field, so that every
// Go type of the format goes through the decoder.
func TestLoadFullExample(t *testing.T) {
	cfg, err := testLoader().Parse(filepath.FromSlash("conf/full.yaml"), []byte(fullDoc))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Pipelines) != 1 {
		t.Fatalf("got %d pipelines, want 1", len(cfg.Pipelines))
	}
	tls := &TLSSpec{Enabled: true, CAFile: filepath.FromSlash("conf/ca.pem"), CertFile: "/etc/tls/c.pem", KeyFile: "/etc/tls/c.key", ServerName: "kafka.acme"}
	src := &KafkaSource{
		Brokers: []string{"k1:9092", "k2:9092"}, Topics: []string{"orders", "refunds"}, Group: "billing",
		Start: "latest", ClientID: "billing-app", Version: "3.6.0", EventType: "com.acme.kafka", TLS: tls,
		SASL: &SASLSpec{Mechanism: "SCRAM-SHA-512", Username: "billing", Password: NewSecret("${file:secrets/pw}", "file-pass")},
	}
	want := &Pipeline{
		APIVersion: APIVersion, Kind: KindPipeline,
		Metadata: Metadata{Name: "full", Tenant: "acme", Labels: map[string]string{"team": "billing"}},
		Spec: PipelineSpec{
			Source: SourceSpec{Kafka: src},
			Filter: &FilterSpec{Any: []FilterSpec{
				{Exact: map[string]string{"type": "com.acme.order.created"}},
				{Suffix: map[string]string{"subject": ".eu"}},
				{Not: &FilterSpec{SQL: "source = 'test'"}},
				{All: []FilterSpec{{Prefix: map[string]string{"type": "com.acme."}}}},
			}},
			Function: &FunctionSpec{
				URL: "https://billing.acme/events", Mode: ModeBatch, Timeout: Duration(5 * time.Second),
				Headers: map[string]Secret{"Authorization": NewSecret("${env:TOKEN}", "Bearer tok-123"), "X-Source": NewSecret("", "sluice")},
				Batch:   &BatchSpec{MaxEvents: 50, Linger: Duration(1500 * time.Millisecond)},
			},
			Delivery: DeliverySpec{
				Ordering:    OrderingNone,
				Concurrency: ConcurrencySpec{Initial: 4, Min: 2, Max: 64, Backoff: 0.5, LatencyThreshold: Duration(2 * time.Second)},
				Retry: RetrySpec{Attempts: 3, Backoff: BackoffConstant, Delay: Duration(time.Second),
					MaxDelay: Duration(time.Second), RetryAfterMax: Duration(2 * time.Minute)},
				MaxEventAge: Duration(90 * time.Minute),
				Window:      100,
			},
			Results: ResultsSpec{
				OnSuccess: []RouteSpec{
					{Kafka: &KafkaSink{
						Brokers: []string{"k1:9092", "k2:9092"}, Topic: "billing-results", Key: "orderid",
						ClientID: "billing-out", Version: "3.6.0",
						TLS:  &TLSSpec{Enabled: true, CAFile: filepath.FromSlash("conf/ca.pem"), CertFile: "/etc/tls/c.pem", KeyFile: "/etc/tls/c.key", ServerName: "out.acme"},
						SASL: &SASLSpec{Mechanism: "PLAIN", Username: "out", Password: NewSecret("${env:PASSWORD}", "hunter2")},
					}},
					{Webhook: &WebhookSink{URL: "http://hooks.acme:8080/x", Secret: NewSecret("${env:WHSEC}", "whsec_c2VjcmV0LWtleQ=="),
						Headers: map[string]Secret{"X-Env": NewSecret("", "prod")}, Timeout: Duration(3 * time.Second)}},
					{Log: &LogSink{Format: LogFormatText}},
				},
				// Inherits the source's brokers and connection settings.
				OnFailure: []RouteSpec{{Kafka: &KafkaSink{
					Brokers: []string{"k1:9092", "k2:9092"}, Topic: "dlq", Key: DefaultSinkKey,
					ClientID: "billing-app", Version: "3.6.0", TLS: tls, SASL: src.SASL,
				}}},
			},
		},
		Pos: Position{File: filepath.FromSlash("conf/full.yaml"), Line: 1, Column: 1},
	}
	if got := cfg.Pipelines[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%#v\nwant\n%#v", got, want)
	}
	if got := cfg.Pipelines[0].ID(); got != "acme/full" {
		t.Errorf("ID() = %q, want acme/full", got)
	}
}

// TestLoadExamples loads examples/pipelines, the design's example.
func TestLoadExamples(t *testing.T) {
	ps, err := LoadPaths(filepath.FromSlash("../examples/pipelines"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 {
		t.Fatalf("got %d pipelines, want 1", len(ps))
	}
	p := ps[0]
	if p.ID() != "acme/orders-billing" {
		t.Errorf("ID() = %q", p.ID())
	}
	if got, want := p.Spec.Delivery.Concurrency, (ConcurrencySpec{Initial: 8, Min: 1, Max: 512, Backoff: 0.7}); got != want {
		t.Errorf("concurrency = %+v, want %+v", got, want)
	}
	if got := p.Spec.Results.OnFailure[0].Kafka; got.Topic != "orders-dlq" || !reflect.DeepEqual(got.Brokers, []string{"127.0.0.1:9092"}) {
		t.Errorf("onFailure kafka = %+v", got)
	}
	if got, want := p.Pos, (Position{File: filepath.FromSlash("../examples/pipelines/orders-billing.yaml"), Line: 6, Column: 1}); got != want {
		t.Errorf("Pos = %v, want %v", got, want)
	}
}

func TestApplyDefaults(t *testing.T) {
	minimal := func() *Pipeline {
		return &Pipeline{
			Metadata: Metadata{Name: "p"},
			Spec: PipelineSpec{
				Source:   SourceSpec{Kafka: &KafkaSource{Brokers: []string{"k:9092"}, Topics: []string{"t"}, Group: "g"}},
				Function: &FunctionSpec{URL: "http://f/"},
			},
		}
	}
	t.Run("everything", func(t *testing.T) {
		p := minimal()
		p.Spec.Results.OnSuccess = []RouteSpec{{Webhook: &WebhookSink{URL: "http://w/"}}, {Log: &LogSink{}}}
		p.Spec.Results.OnFailure = []RouteSpec{{Kafka: &KafkaSink{Topic: "dlq"}}}
		ApplyDefaults(p)
		want := minimal()
		want.APIVersion, want.Kind, want.Metadata.Tenant = APIVersion, KindPipeline, "default"
		want.Spec.Source.Kafka.Start = "earliest"
		want.Spec.Source.Kafka.EventType = "dev.sluice.kafka.message"
		want.Spec.Source.Kafka.ClientID = "sluice"
		want.Spec.Function.Mode = "binary"
		want.Spec.Function.Timeout = Duration(30 * time.Second)
		want.Spec.Delivery = DeliverySpec{
			Ordering:    "partition",
			Concurrency: ConcurrencySpec{Initial: 8, Min: 1, Max: 256, Backoff: 0.7},
			Retry: RetrySpec{Attempts: 5, Backoff: "exponential", Delay: Duration(200 * time.Millisecond),
				MaxDelay: Duration(30 * time.Second), RetryAfterMax: Duration(60 * time.Second)},
			MaxEventAge: Duration(24 * time.Hour),
			Window:      1024,
		}
		want.Spec.Results.OnSuccess = []RouteSpec{
			{Webhook: &WebhookSink{URL: "http://w/", Timeout: Duration(10 * time.Second)}},
			{Log: &LogSink{Format: "json"}},
		}
		want.Spec.Results.OnFailure = []RouteSpec{{Kafka: &KafkaSink{
			Brokers: []string{"k:9092"}, Topic: "dlq", Key: "partitionkey", ClientID: "sluice",
		}}}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("got\n%#v\nwant\n%#v", p, want)
		}
		if err := Validate(p); err != nil {
			t.Errorf("Validate: %v", err)
		}
		before := *p.Spec.Results.OnFailure[0].Kafka
		ApplyDefaults(p)
		if !reflect.DeepEqual(p, want) || !reflect.DeepEqual(*p.Spec.Results.OnFailure[0].Kafka, before) {
			t.Errorf("ApplyDefaults is not idempotent")
		}
	})

	tests := []struct {
		name   string
		modify func(p *Pipeline)
		check  func(p *Pipeline) any // returns what to compare
		want   any
	}{
		{"batch mode gets batch defaults",
			func(p *Pipeline) { p.Spec.Function.Mode = ModeBatch },
			func(p *Pipeline) any { return *p.Spec.Function.Batch },
			BatchSpec{MaxEvents: 100, Linger: Duration(10 * time.Millisecond)}},
		{"binary mode gets no batch",
			func(p *Pipeline) {},
			func(p *Pipeline) any { return p.Spec.Function.Batch == nil },
			true},
		{"max alone lowers initial",
			func(p *Pipeline) { p.Spec.Delivery.Concurrency.Max = 4 },
			func(p *Pipeline) any { return p.Spec.Delivery.Concurrency },
			ConcurrencySpec{Initial: 4, Min: 1, Max: 4, Backoff: 0.7}},
		{"min alone raises max and initial",
			func(p *Pipeline) { p.Spec.Delivery.Concurrency.Min = 300 },
			func(p *Pipeline) any { return p.Spec.Delivery.Concurrency },
			ConcurrencySpec{Initial: 300, Min: 300, Max: 300, Backoff: 0.7}},
		{"initial alone raises max",
			func(p *Pipeline) { p.Spec.Delivery.Concurrency.Initial = 1000 },
			func(p *Pipeline) any { return p.Spec.Delivery.Concurrency },
			ConcurrencySpec{Initial: 1000, Min: 1, Max: 1000, Backoff: 0.7}},
		{"maxDelay at least delay",
			func(p *Pipeline) { p.Spec.Delivery.Retry.Delay = Duration(time.Minute) },
			func(p *Pipeline) any { return p.Spec.Delivery.Retry.MaxDelay },
			Duration(time.Minute)},
		{"sink with own brokers inherits nothing",
			func(p *Pipeline) {
				p.Spec.Source.Kafka.TLS = &TLSSpec{Enabled: true}
				p.Spec.Source.Kafka.Version = "3.6.0"
				p.Spec.Results.OnSuccess = []RouteSpec{{Kafka: &KafkaSink{Brokers: []string{"o:9092"}, Topic: "t"}}}
			},
			func(p *Pipeline) any { return *p.Spec.Results.OnSuccess[0].Kafka },
			KafkaSink{Brokers: []string{"o:9092"}, Topic: "t", Key: "partitionkey", ClientID: "sluice"}},
		{"sink without brokers inherits connection settings it does not set",
			func(p *Pipeline) {
				p.Spec.Source.Kafka.TLS = &TLSSpec{Enabled: true}
				p.Spec.Source.Kafka.SASL = &SASLSpec{Mechanism: SASLPlain, Username: "u", Password: NewSecret("", "p")}
				p.Spec.Source.Kafka.Version = "3.6.0"
				p.Spec.Results.OnSuccess = []RouteSpec{{Kafka: &KafkaSink{Topic: "t", Version: "2.8.0", TLS: &TLSSpec{}}}}
			},
			func(p *Pipeline) any {
				k := p.Spec.Results.OnSuccess[0].Kafka
				return []any{k.Brokers, k.Version, k.TLS.Enabled, k.SASL == p.Spec.Source.Kafka.SASL}
			},
			[]any{[]string{"k:9092"}, "2.8.0", false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := minimal()
			tt.modify(p)
			ApplyDefaults(p)
			if got := tt.check(p); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestValidateCodeBuilt(t *testing.T) {
	p := &Pipeline{Metadata: Metadata{Name: "p"}, Spec: PipelineSpec{
		Source:   SourceSpec{Kafka: &KafkaSource{Brokers: []string{"k:9092"}, Topics: []string{"t"}}},
		Function: &FunctionSpec{URL: "http://f/"},
	}}
	if err := Validate(p); err == nil || !strings.Contains(err.Error(), "apiVersion: unsupported apiVersion") {
		t.Errorf("Validate before ApplyDefaults = %v, want an apiVersion error", err)
	}
	ApplyDefaults(p)
	p.Spec.Delivery.Retry.Attempts = 0
	want := "spec.source.kafka.group: missing required field\nspec.delivery.retry.attempts: must be at least 1, got 0"
	if err := Validate(p); err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want\n%s", err, want)
	}
}

// writeFiles creates files (name → content) under a new directory.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// named returns a valid document named name.
func named(name string) string {
	return "apiVersion: sluice.dev/v1\nkind: Pipeline\nmetadata: {name: " + name + "}\nspec:\n" + okSpec
}

func TestLoadPathsDirectory(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"b.yml":             named("b1"),
		"a.yaml":            named("a1") + "---\n# nothing\n---\n" + named("a2"),
		"notes.txt":         "not yaml",
		".hidden.yaml":      "broken: [",
		"sub/ignored.yaml":  "broken: [",
		"other/extra.yaml":  named("x1"),
		"other/.swp.yaml":   "broken: [",
		"other/readme.json": "{}",
	})
	ps, err := LoadPaths(dir, filepath.Join(dir, "other", "extra.yaml"), filepath.Join(dir, "a.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.ID()+"@"+p.Pos.String())
	}
	a, b, x := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yml"), filepath.Join(dir, "other", "extra.yaml")
	want := []string{"default/a1@" + a + ":1:1", "default/a2@" + a + ":11:1", "default/b1@" + b + ":1:1", "default/x1@" + x + ":1:1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLoadPathsErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"one/a.yaml":   named("dup") + "---\n" + named("Bad"),
		"two/b.yaml":   "# leading comment\n\n" + named("dup"),
		"two/c.yaml":   "x: [\n---\n" + named("ok"),
		"empty/x.txt":  "",
		"three/d.yaml": "",
	})
	missing := filepath.Join(dir, "missing.yaml")
	_, err := LoadPaths(filepath.Join(dir, "one"), filepath.Join(dir, "two"), filepath.Join(dir, "empty"), filepath.Join(dir, "three"), missing)
	a, b, c := filepath.Join(dir, "one", "a.yaml"), filepath.Join(dir, "two", "b.yaml"), filepath.Join(dir, "two", "c.yaml")
	want := []string{
		filepath.Join(dir, "empty") + ": no *.yaml or *.yml files in directory",
		missing + ": no such file or directory",
		a + ":11:18: metadata.name: invalid name \"Bad\": want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
		b + ":5:18: metadata.name: duplicate Pipeline \"default/dup\": first defined at " + a + ":3:18",
		c + ":1:4: sequence end token ']' not found",
	}
	if err == nil {
		t.Fatal("LoadPaths succeeded")
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(err, fs.ErrNotExist) = false for a missing file")
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Pos.File != filepath.Join(dir, "empty") {
		t.Errorf("errors.As(*FieldError) = %v", fe)
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	doc := `apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: p1}
spec:
  source:
    kafka: &src {brokers: ["k:9092"], topics: [t], group: g}
  function: {url: "http://f/"}
  delivery:
    retry: &r {attempts: 2, delay: 1s}
---
apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: p2}
spec:
  source:
    kafka:
      <<: [{group: ignored, start: latest}, {clientID: second}]
      brokers: ["k:9092"]
      topics: [t]
      group: g2
  function: {url: "http://f/"}
`
	ps, err := Load("p.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	k := ps[1].Spec.Source.Kafka
	if k.Group != "g2" || k.Start != "latest" || k.ClientID != "second" {
		t.Errorf("merged kafka = %+v", k)
	}
	// Anchors do not cross documents.
	_, err = Load("p.yaml", []byte(doc+"---\n"+strings.Replace(named("p3"), "kafka: {", "kafka: *src\n    x: {", 1)))
	if err == nil || !strings.Contains(err.Error(), `p.yaml:28:12: spec.source.kafka: undefined alias "src"`) {
		t.Errorf("alias across documents: %v", err)
	}
}

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		in   string
		want []chunk
	}{
		{"", nil},
		{"a: 1\n", []chunk{{[]byte("a: 1\n"), 1}}},
		{"a: 1\n---\nb: 2", []chunk{{[]byte("a: 1\n"), 1}, {[]byte("---\nb: 2"), 2}}},
		{"# c\n%YAML 1.2\n---\na: 1\n--- \n---\n", []chunk{{[]byte("# c\n%YAML 1.2\n---\na: 1\n"), 1}, {[]byte("--- \n"), 5}, {[]byte("---\n"), 6}}},
		{"a: |\n  ---x\n----\n...\nb: 1\n... # end\n", []chunk{{[]byte("a: |\n  ---x\n----\n...\n"), 1}, {[]byte("b: 1\n... # end\n"), 5}}},
		{"---\r\na: 1\r\n---\r\nb: 2\r\n", []chunk{{[]byte("---\r\na: 1\r\n"), 1}, {[]byte("---\r\nb: 2\r\n"), 3}}},
	}
	for _, tt := range tests {
		if got := splitDocuments([]byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitDocuments(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// TestLoadLimits feeds documents built to explode: an alias bomb stops at
// maxNodes with one error, and the error list is bounded.
func TestLoadLimits(t *testing.T) {
	var laughs strings.Builder
	laughs.WriteString(header + okSpec + "  filter:\n    any:\n    - &f0 {exact: {a: b}}\n")
	for i := 1; i < 30; i++ {
		fmt.Fprintf(&laughs, "    - &f%d {all: [*f%d, *f%d, *f%d, *f%d]}\n", i, i-1, i-1, i-1, i-1)
	}
	_, err := testLoader().Parse("f.yaml", []byte(laughs.String()))
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("alias bomb: %v", err)
	}
	if len(le.Errors) != 1 || !strings.HasSuffix(le.Errors[0].Error(), ": document too large: more than 100000 values after expanding aliases") {
		t.Errorf("alias bomb: got\n%.2000s", err)
	}

	_, err = testLoader().Parse("f.yaml", []byte(strings.Repeat("apiVersion: x\nkind: Pipeline\nmetadata: {name: x}\n---\n", 600)))
	if !errors.As(err, &le) || len(le.Errors) != maxErrors+1 || le.Errors[maxErrors].Error() != "too many errors: 1399 more not shown" {
		t.Errorf("got %d errors, last %v", len(le.Errors), le.Errors[len(le.Errors)-1])
	}
}
