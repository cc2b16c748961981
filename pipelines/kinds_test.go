package pipelines

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Secret values of kindsLoader; none may appear in any error or output.
const (
	keyA = "key-a-0123456789abcdef"
	keyB = "key-b-0123456789abcdef"
)

// kindsLoader resolves a fixed environment and checks patterns with
// stubPattern.
func kindsLoader() Loader {
	env := map[string]string{"KEY_A": keyA, "KEY_B": keyB, "SAME_AS_A": keyA, "SHORT": "short-key", "SPACE": "a key with spaces in it", "EMPTY": ""}
	return Loader{
		LookupEnv: func(name string) (string, bool) {
			v, ok := env[name]
			return v, ok
		},
		ReadFile: func(path string) ([]byte, error) {
			if path == filepath.FromSlash("conf/keys/b") {
				return []byte(keyB + "\n"), nil
			}
			return nil, os.ErrNotExist
		},
		CheckPattern: stubPattern,
	}
}

// stubPattern stands in for the pattern engine: it rejects a "numeric"
// condition without an operand pair, with the path of the condition, and
// a key "boom" with an error that carries no path.
func stubPattern(raw any) error {
	var errs []error
	var walk func(v any, path []any)
	walk = func(v any, path []any) {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				p := append(append([]any(nil), path...), k)
				if k == "boom" {
					errs = append(errs, errors.New("pattern engine exploded"))
				}
				if n, ok := e.([]any); k == "numeric" && ok && len(n)%2 == 1 {
					errs = append(errs, fmt.Errorf("wrapped: %w", &PatternError{Segments: p, Msg: "numeric wants operator and value pairs"}))
					continue
				}
				walk(e, p)
			}
		case []any:
			for i, e := range t {
				walk(e, append(append([]any(nil), path...), i))
			}
		}
	}
	walk(raw, nil)
	return errors.Join(errs...)
}

// doc starts a document of kind named name (metadata on line 3 of the
// document).
func doc(kind, metadata string) string {
	return "apiVersion: sluice.dev/v1\nkind: " + kind + "\nmetadata: " + metadata + "\nspec:\n"
}

func TestKindErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "tenant fields",
			yaml: doc("Tenant", "{name: Acme, tenant: x}") + `  apiKeys: "${env:KEY_A}"
  weight: -1
  quotas: {maxConcurrency: -1, rate: fast, burst: 5, maxQueue: 3}
  pool: Small
  region: eu
`,
			want: []string{
				`p.yaml:3:18: metadata.name: invalid name "Acme": want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
				`p.yaml:3:24: metadata.tenant: unknown field "tenant"`,
				`p.yaml:5:12: spec.apiKeys: expected a sequence, got a string`,
				`p.yaml:6:11: spec.weight: must be at least 1, got -1`,
				`p.yaml:7:28: spec.quotas.maxConcurrency: must be at least 0, got -1`,
				`p.yaml:7:38: spec.quotas.rate: expected a number, got a string`,
				`p.yaml:7:51: spec.quotas.burst: burst needs rate`,
				`p.yaml:7:54: spec.quotas.maxQueue: unknown field "maxQueue"`,
				`p.yaml:8:9: spec.pool: invalid name "Small": want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
				`p.yaml:9:3: spec.region: unknown field "region"`,
			},
		},
		{
			name: "tenant keys",
			yaml: doc("Tenant", "{name: a}") + "  apiKeys: []\n---\n" +
				doc("Tenant", "{name: b}") + `  apiKeys:
  - "${env:SHORT}"
  - "${env:SPACE}"
  - "${env:EMPTY}"
  - "${env:UNSET}"
  - ""
  - 12345678901234567890
`,
			want: []string{
				`p.yaml:5:12: spec.apiKeys: must not be empty`,
				`p.yaml:12:5: spec.apiKeys[0]: API key too short: want at least 16 characters`,
				`p.yaml:13:5: spec.apiKeys[1]: API key contains a space, a control or a non-ASCII character`,
				`p.yaml:14:5: spec.apiKeys[2]: must not be empty`,
				`p.yaml:15:5: spec.apiKeys[3]: environment variable "UNSET" is not set`,
				`p.yaml:16:5: spec.apiKeys[4]: must not be empty`,
				`p.yaml:17:5: spec.apiKeys[5]: expected a string, got an integer (quote it)`,
			},
		},
		{
			name: "tenant missing spec",
			yaml: "apiVersion: sluice.dev/v1\nkind: Tenant\nmetadata: {}\n",
			want: []string{
				`p.yaml:1:1: spec.apiKeys: missing required field`,
				`p.yaml:3:1: metadata.name: missing required field`,
			},
		},
		{
			name: "function fields",
			yaml: doc("Function", "{name: f1}") + `  url: ftp://f/
  mode: batch
  timeout: 5
  headers: {"bad header": x}
  batch: {maxEvents: 2}
  delivery:
    ordering: key
    window: 3
    concurrency: {min: -1}
    retry: {attempts: -1}
    maxEventAge: -1s
  maxRequestBytes: 64MiB
  dedupWindow: 1x
`,
			want: []string{
				`p.yaml:5:8: spec.url: invalid URL "ftp://f/": want an absolute http or https URL`,
				`p.yaml:6:9: spec.mode: mode batch is only for pipelines: events come here one at a time; want binary or structured`,
				`p.yaml:7:12: spec.timeout: invalid duration 5: a unit is required, e.g. "5s"`,
				`p.yaml:8:13: spec.headers["bad header"]: invalid header name "bad header"`,
				`p.yaml:9:3: spec.batch: unknown field "batch"`,
				`p.yaml:11:5: spec.delivery.ordering: unknown field "ordering"`,
				`p.yaml:12:5: spec.delivery.window: unknown field "window"`,
				`p.yaml:13:24: spec.delivery.concurrency.min: must be at least 1, got -1`,
				`p.yaml:14:23: spec.delivery.retry.attempts: must be at least 1, got -1`,
				`p.yaml:15:18: spec.delivery.maxEventAge: negative duration "-1s"`,
				`p.yaml:16:20: spec.maxRequestBytes: 64MiB is above the limit of 32MiB`,
				`p.yaml:17:16: spec.dedupWindow: invalid duration "1x"`,
			},
		},
		{
			name: "function sizes and routes",
			yaml: doc("Function", "{name: f1}") + `  url: http://f/
  maxRequestBytes: 1.5MiB
  results:
    onSuccess: [{kafka: {topic: out}}, {bus: {}}, {bus: orders}]
---
` + doc("Function", "{name: f2}") + `  url: http://f/
  maxRequestBytes: -1
---
` + doc("Function", "{name: f3}") + `  mode: grpc
  maxRequestBytes: [1]
`,
			want: []string{
				`p.yaml:6:20: spec.maxRequestBytes: invalid size "1.5MiB": want bytes or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. "1MiB"`,
				`p.yaml:8:18: spec.results.onSuccess[0].kafka.brokers: missing required field (there is no Kafka source to take them from)`,
				`p.yaml:8:41: spec.results.onSuccess[1].bus.name: missing required field`,
				`p.yaml:8:57: spec.results.onSuccess[2].bus: expected a mapping, got a string`,
				`p.yaml:15:20: spec.maxRequestBytes: negative size -1`,
				`p.yaml:20:1: spec.url: missing required field`,
				`p.yaml:21:9: spec.mode: invalid value "grpc": want binary or structured`,
				`p.yaml:22:20: spec.maxRequestBytes: expected a size such as 1048576 or "1MiB", got a sequence`,
			},
		},
		{
			name: "bus storage and archive",
			yaml: doc("Bus", "{name: b1}") + `  storage: {embedded: {}, kafka: {brokers: []}}
  archive: {pattern: [a], retention: -1h}
---
` + doc("Bus", "{name: b2}") + `  storage: {kafka: {topic: "a/b", version: x, tls: {caFile: ca.pem}}}
  archive: {pattern: {}}
---
` + doc("Bus", "{name: b3}") + `  storage: {embedded: {size: 1}}
  rules: {}
`,
			want: []string{
				`p.yaml:5:12: spec.storage: only one of embedded or kafka may be set, got embedded and kafka`,
				`p.yaml:5:44: spec.storage.kafka.brokers: must not be empty`,
				`p.yaml:6:22: spec.archive.pattern: expected a mapping, got a sequence`,
				`p.yaml:6:38: spec.archive.retention: negative duration "-1h"`,
				`p.yaml:12:13: spec.storage.kafka.brokers: missing required field`,
				`p.yaml:12:28: spec.storage.kafka.topic: invalid topic "a/b": want letters, digits, '.', '_' and '-', at most 249 characters`,
				`p.yaml:12:44: spec.storage.kafka.version: invalid Kafka version "x": want e.g. "3.6.0"`,
				`p.yaml:12:52: spec.storage.kafka.tls: TLS settings are given but enabled is false; set enabled: true`,
				`p.yaml:13:22: spec.archive.pattern: must not be empty: leave pattern out to match every event`,
				`p.yaml:19:24: spec.storage.embedded.size: unknown field "size"`,
				`p.yaml:20:10: spec.rules: expected a sequence, got a mapping`,
			},
		},
		{
			name: "bus rules and targets",
			yaml: doc("Bus", "{name: b1}") + `  rules:
  - name: r1
    pattern: {type: [a]}
    filter: {exact: {type: a}}
    targets: []
  - name: r1
    filter: {sql: "type ="}
    targets:
    - {}
    - function: {url: "http://f/"}
      sink: {log: {}}
    - function: {url: "http://f/", mode: batch}
      retry: {attempts: 2}
      onFailure: [{log: {}}]
    - sink: {log: {format: xml}}
      delivery: {}
      results: {}
      transform: {}
    - bus: {name: b1}
      transform: {path: data, template: "x"}
    - sink: {bus: {name: B2}}
      transform: {path: "$.data[x]"}
    - sink: {webhook: {url: "http://w/"}}
      transform: {template: "{\"id\": \"${id}\", \"x\": ${.data.x"}
      onFailure: [{kafka: {topic: dlq}}]
  - targets: [{bus: {name: ""}}]
    pattern: {type: [.inf]}
`,
			want: []string{
				`p.yaml:8:13: spec.rules[0].filter: only one of pattern or filter may be set`,
				`p.yaml:9:14: spec.rules[0].targets: must not be empty`,
				`p.yaml:10:11: spec.rules[1].name: duplicate rule "r1": first defined at p.yaml:6:11`,
				`p.yaml:11:19: spec.rules[1].filter.sql: invalid CESQL expression: incomplete or malformed`,
				`p.yaml:13:7: spec.rules[1].targets[0]: one of function, sink or bus is required`,
				`p.yaml:14:7: spec.rules[1].targets[1]: only one of function, sink or bus may be set, got function and sink`,
				`p.yaml:16:42: spec.rules[1].targets[2].function.mode: mode batch is only for pipelines: events come here one at a time; want binary or structured`,
				`p.yaml:17:14: spec.rules[1].targets[2].retry: retry is for sink and bus targets; a function target has delivery and results`,
				`p.yaml:18:18: spec.rules[1].targets[2].onFailure: onFailure is for sink and bus targets; a function target has delivery and results`,
				`p.yaml:19:28: spec.rules[1].targets[3].sink.log.format: invalid value "xml": want json or text`,
				`p.yaml:20:17: spec.rules[1].targets[3].delivery: delivery is for function targets; a sink or bus target has retry and onFailure`,
				`p.yaml:21:16: spec.rules[1].targets[3].results: results is for function targets; a sink or bus target has retry and onFailure`,
				`p.yaml:22:18: spec.rules[1].targets[3].transform: one of path or template is required`,
				`p.yaml:23:19: spec.rules[1].targets[4].bus.name: a rule cannot target its own bus: every event it delivers would match again`,
				`p.yaml:24:18: spec.rules[1].targets[4].transform: only one of path or template may be set, got path and template`,
				`p.yaml:24:25: spec.rules[1].targets[4].transform.path: invalid path "data": want "$" followed by .name, [index] or ["key"] steps`,
				`p.yaml:25:26: spec.rules[1].targets[5].sink.bus.name: invalid name "B2": want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
				`p.yaml:26:25: spec.rules[1].targets[5].transform.path: invalid path "$.data[x]": [x]: want an index (0, 1, ...) or a quoted key`,
				`p.yaml:28:29: spec.rules[1].targets[6].transform.template: invalid placeholder ${id}: want ${.name...} (a path without "$")`,
				`p.yaml:29:20: spec.rules[1].targets[6].onFailure[0].kafka.brokers: missing required field (there is no Kafka source to take them from)`,
				`p.yaml:30:5: spec.rules[2].name: missing required field`,
				`p.yaml:30:28: spec.rules[2].targets[0].bus.name: must not be empty`,
				`p.yaml:31:22: spec.rules[2].pattern.type[0]: .inf is not a JSON number`,
			},
		},
		{
			name: "patterns checked by the hook, at their lines",
			yaml: doc("Bus", "{name: b1}") + `  archive:
    pattern: {boom: [1]}
  rules:
  - name: r1
    pattern:
      type: [com.acme.order.created]
      data:
        amount:
        - numeric: [">"]
        "odd.key": [{numeric: [">", 1, "<"]}]
    targets: [{sink: {log: {}}}]
  - name: r2
    pattern:
      $or:
      - {data: {x: [{numeric: ["=", 1]}]}}
      - {data: {y: [{numeric: ["="]}]}}
    targets: [{sink: {log: {}}}]
`,
			want: []string{
				`p.yaml:6:14: spec.archive.pattern: pattern engine exploded`,
				`p.yaml:13:20: spec.rules[0].pattern.data.amount[0].numeric: numeric wants operator and value pairs`,
				`p.yaml:14:31: spec.rules[0].pattern.data["odd.key"][0].numeric: numeric wants operator and value pairs`,
				`p.yaml:20:31: spec.rules[1].pattern["$or"][1].data.y[0].numeric: numeric wants operator and value pairs`,
			},
		},
		{
			name: "duplicate names per kind and tenant",
			yaml: doc("Tenant", "{name: acme}") + "  apiKeys: [\"${env:KEY_A}\"]\n---\n" +
				doc("Tenant", "{name: acme}") + "  apiKeys: [\"${env:KEY_B}\"]\n---\n" +
				doc("Function", "{name: f, tenant: acme}") + "  url: http://f/\n---\n" +
				doc("Function", "{name: f, tenant: acme}") + "  url: http://f/\n---\n" +
				doc("Bus", "{name: f, tenant: acme}") + "---\n" +
				doc("Bus", "{name: f, tenant: acme}"),
			want: []string{
				`p.yaml:9:18: metadata.name: duplicate Tenant "acme": first defined at p.yaml:3:18`,
				`p.yaml:21:18: metadata.name: duplicate Function "acme/f": first defined at p.yaml:15:18`,
				`p.yaml:32:18: metadata.name: duplicate Bus "acme/f": first defined at p.yaml:27:18`,
			},
		},
		{
			name: "unknown tenants when tenants are defined",
			yaml: doc("Tenant", "{name: acme}") + "  apiKeys: [\"${env:KEY_A}\"]\n---\n" +
				doc("Function", "{name: f, tenant: acme}") + "  url: http://f/\n---\n" +
				doc("Function", "{name: f, tenant: beta}") + "  url: http://f/\n---\n" +
				doc("Bus", "{name: b}") + "---\n" +
				doc("Pipeline", "{name: p, tenant: Bad}") + okSpec,
			want: []string{
				`p.yaml:15:29: metadata.tenant: unknown tenant "beta": no Tenant document defines it`,
				`p.yaml:21:1: metadata.tenant: missing required field (there are Tenant documents, none named "default")`,
				`p.yaml:26:29: metadata.tenant: invalid name "Bad": want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters`,
			},
		},
		{
			name: "duplicate API keys are named, never printed",
			yaml: doc("Tenant", "{name: acme}") + "  apiKeys: [\"${env:KEY_A}\", \"${file:keys/b}\"]\n---\n" +
				doc("Tenant", "{name: beta}") + "  apiKeys: [\"${env:SAME_AS_A}\", \"" + keyB + "\", \"${env:KEY_A}\"]\n",
			want: []string{
				`conf/p.yaml:11:13: spec.apiKeys[0]: duplicate API key ${env:SAME_AS_A}: same value as an API key of tenant "acme" at conf/p.yaml:5:13`,
				`conf/p.yaml:11:33: spec.apiKeys[1]: duplicate API key: same value as an API key of tenant "acme" at conf/p.yaml:5:29`,
				`conf/p.yaml:11:59: spec.apiKeys[2]: duplicate API key ${env:KEY_A}: same value as an API key of tenant "acme" at conf/p.yaml:5:13`,
			},
		},
		{
			name: "bus references must name a bus of the same tenant",
			yaml: doc("Bus", "{name: orders, tenant: acme}") + `  rules:
  - name: r
    targets:
    - bus: {name: audit}
    - sink: {bus: {name: other}}
    - sink: {log: {}}
      onFailure: [{bus: {name: dlq}}]
    - function: {url: "http://f/"}
      results: {onSuccess: [{bus: {name: orders}}, {bus: {name: results}}]}
---
` + doc("Bus", "{name: other, tenant: beta}") + "---\n" +
				doc("Pipeline", "{name: p, tenant: beta}") + okSpec + "  results: {onFailure: [{bus: {name: orders}}, {bus: {name: other}}]}\n---\n" +
				doc("Function", "{name: f, tenant: acme}") + "  url: http://f/\n  results: {onSuccess: [{bus: {name: gone}}]}\n",
			want: []string{
				`p.yaml:8:19: spec.rules[0].targets[0].bus.name: unknown bus "audit": tenant "acme" has no Bus of that name`,
				`p.yaml:9:26: spec.rules[0].targets[1].sink.bus.name: unknown bus "other": tenant "acme" has no Bus of that name`,
				`p.yaml:11:32: spec.rules[0].targets[2].onFailure[0].bus.name: unknown bus "dlq": tenant "acme" has no Bus of that name`,
				`p.yaml:13:65: spec.rules[0].targets[3].results.onSuccess[1].bus.name: unknown bus "results": tenant "acme" has no Bus of that name`,
				`p.yaml:27:38: spec.results.onFailure[0].bus.name: unknown bus "orders": tenant "beta" has no Bus of that name`,
				`p.yaml:34:38: spec.results.onSuccess[0].bus.name: unknown bus "gone": tenant "acme" has no Bus of that name`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := "p.yaml"
			if strings.HasPrefix(tt.name, "duplicate API keys") {
				file = filepath.FromSlash("conf/p.yaml")
			}
			cfg, err := kindsLoader().Parse(file, []byte(tt.yaml))
			if cfg != nil {
				t.Errorf("Parse returned a config along with errors")
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Parse error = %v (%T), want a *LoadError", err, err)
			}
			got := strings.Split(filepath.ToSlash(err.Error()), "\n")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if len(le.Errors) != len(tt.want) {
				t.Errorf("got %d FieldErrors, want %d", len(le.Errors), len(tt.want))
			}
			for _, secret := range []string{keyA, keyB} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("an error shows a secret value:\n%v", err)
				}
			}
		})
	}
}

// TestSingleTenantNeedsNoTenants: without Tenant documents, tenants are
// free labels and references are checked within them.
func TestSingleTenantNeedsNoTenants(t *testing.T) {
	yaml := doc("Function", "{name: f, tenant: anyone}") + "  url: http://f/\n  results: {onSuccess: [{bus: {name: b}}]}\n---\n" +
		doc("Bus", "{name: b, tenant: anyone}") + "---\n" +
		doc("Pipeline", "{name: p}") + okSpec
	cfg, err := kindsLoader().Parse("p.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Functions) != 1 || len(cfg.Buses) != 1 || len(cfg.Pipelines) != 1 || len(cfg.Tenants) != 0 {
		t.Errorf("config = %+v", cfg)
	}
}

// TestPatternsUncheckedWithoutHook: a nil CheckPattern leaves patterns to
// the engine, but they are still decoded with their types.
func TestPatternsUncheckedWithoutHook(t *testing.T) {
	l := kindsLoader()
	l.CheckPattern = nil
	cfg, err := l.Parse("p.yaml", []byte(doc("Bus", "{name: b}")+"  rules: [{name: r, pattern: {boom: [1]}, targets: [{sink: {log: {}}}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Buses[0].Spec.Rules[0].Pattern, map[string]any{"boom": []any{int64(1)}}; !reflect.DeepEqual(got, want) {
		t.Errorf("pattern = %#v, want %#v", got, want)
	}
}

// kindsFullDoc mixes every kind, setting every field of the new ones.
const kindsFullDoc = `apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: acme, labels: {tier: gold}}
spec:
  apiKeys: ["${env:KEY_A}", "${file:keys/b}"]
  weight: 3
  quotas: {maxConcurrency: 64, rate: 2.5, burst: 200, maxQueueDepth: 100000}
  pool: big
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: resize, tenant: acme}
spec:
  url: http://127.0.0.1:8080/
  mode: structured
  timeout: 10s
  headers: {X-Token: "${env:KEY_B}"}
  delivery:
    concurrency: {initial: 2, min: 1, max: 8, backoff: 0.5, latencyThreshold: 1s}
    retry: {attempts: 3, backoff: constant, delay: 1s, maxDelay: 1s, retryAfterMax: 5s}
    maxEventAge: 1h
  results:
    onSuccess: [{bus: {name: orders}}]
    onFailure: [{kafka: {brokers: ["k:9092"], topic: dlq}}]
  maxRequestBytes: 512KiB
  dedupWindow: 1h
---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders, tenant: acme}
spec:
  storage:
    kafka:
      brokers: ["k:9092"]
      topic: bus-orders
      group: bus-orders-rules
      clientID: bus
      version: "3.6.0"
      tls: {enabled: true, caFile: ca.pem}
      sasl: {mechanism: PLAIN, username: u, password: "${env:KEY_B}"}
  archive:
    pattern: {source: [{prefix: /acme/}]}
    retention: 48h
  rules:
  - name: big-orders
    pattern: &p
      type: [com.acme.order.created]
      data: {amount: [{numeric: [">", 100, "<=", 1.5e3]}], gift: [true, null]}
    targets:
    - function: {url: "http://f/", mode: binary, timeout: 5s, headers: {A: b}}
      transform: {path: "$.data.order"}
      delivery: {maxEventAge: 2h}
      results: {onFailure: [{log: {format: text}}]}
    - sink: {kafka: {brokers: ["k:9092"], topic: big-orders, key: id}}
      transform: {template: '{"id": "${.id}", "amount": ${.data.amount}}'}
      retry: {attempts: 9}
      onFailure: [{webhook: {url: "http://w/"}}]
    - bus: {name: orders-audit}
  - name: all
    filter: {prefix: {type: com.acme.}}
    targets: [{sink: {bus: {name: orders-audit}}}]
  - name: copy
    pattern: {<<: *p, source: [x]}
    targets: [{sink: {log: {}}}]
---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders-audit, tenant: acme}
---
apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: p, tenant: acme}
spec:
  source: {kafka: {brokers: ["k:9092"], topics: [t], group: g}}
  function: {url: "http://f/"}
  results: {onSuccess: [{bus: {name: orders}}]}
`

func TestLoadAllKinds(t *testing.T) {
	cfg, err := kindsLoader().Parse(filepath.FromSlash("conf/all.yaml"), []byte(kindsFullDoc))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tenants) != 1 || len(cfg.Functions) != 1 || len(cfg.Buses) != 2 || len(cfg.Pipelines) != 1 {
		t.Fatalf("got %d tenants, %d functions, %d buses, %d pipelines", len(cfg.Tenants), len(cfg.Functions), len(cfg.Buses), len(cfg.Pipelines))
	}
	file := filepath.FromSlash("conf/all.yaml")

	wantTenant := &Tenant{
		APIVersion: APIVersion, Kind: KindTenant,
		Metadata: TenantMetadata{Name: "acme", Labels: map[string]string{"tier": "gold"}},
		Spec: TenantSpec{
			APIKeys: []Secret{NewSecret("${env:KEY_A}", keyA), NewSecret("${file:keys/b}", keyB)},
			Weight:  3,
			Quotas:  TenantQuotas{MaxConcurrency: 64, Rate: 2.5, Burst: 200, MaxQueueDepth: 100000},
			Pool:    "big",
		},
		Pos: Position{File: file, Line: 1, Column: 1},
	}
	if got := cfg.Tenants[0]; !reflect.DeepEqual(got, wantTenant) {
		t.Errorf("tenant:\n%#v\nwant\n%#v", got, wantTenant)
	}

	wantFunction := &Function{
		APIVersion: APIVersion, Kind: KindFunction,
		Metadata: Metadata{Name: "resize", Tenant: "acme"},
		Spec: AsyncFunctionSpec{
			URL: "http://127.0.0.1:8080/", Mode: ModeStructured, Timeout: Duration(10 * time.Second),
			Headers: map[string]Secret{"X-Token": NewSecret("${env:KEY_B}", keyB)},
			Delivery: AsyncDeliverySpec{
				Concurrency: ConcurrencySpec{Initial: 2, Min: 1, Max: 8, Backoff: 0.5, LatencyThreshold: Duration(time.Second)},
				Retry: RetrySpec{Attempts: 3, Backoff: BackoffConstant, Delay: Duration(time.Second),
					MaxDelay: Duration(time.Second), RetryAfterMax: Duration(5 * time.Second)},
				MaxEventAge: Duration(time.Hour),
			},
			Results: ResultsSpec{
				OnSuccess: []RouteSpec{{Bus: &BusRoute{Name: "orders"}}},
				OnFailure: []RouteSpec{{Kafka: &KafkaSink{Brokers: []string{"k:9092"}, Topic: "dlq", Key: DefaultSinkKey, ClientID: DefaultClientID}}},
			},
			MaxRequestBytes: 512 << 10,
			DedupWindow:     Duration(time.Hour),
		},
		Pos: Position{File: file, Line: 10, Column: 1},
	}
	if got := cfg.Functions[0]; !reflect.DeepEqual(got, wantFunction) {
		t.Errorf("function:\n%#v\nwant\n%#v", got, wantFunction)
	}
	if got, want := cfg.Functions[0].Spec.Endpoint(), (FunctionSpec{URL: "http://127.0.0.1:8080/", Mode: ModeStructured,
		Timeout: Duration(10 * time.Second), Headers: wantFunction.Spec.Headers}); !reflect.DeepEqual(got, want) {
		t.Errorf("Endpoint() = %#v, want %#v", got, want)
	}

	pattern := map[string]any{
		"type": []any{"com.acme.order.created"},
		"data": map[string]any{
			"amount": []any{map[string]any{"numeric": []any{">", int64(100), "<=", 1.5e3}}},
			"gift":   []any{true, nil},
		},
	}
	defaultRetry := RetrySpec{Attempts: 5, Backoff: BackoffExponential, Delay: Duration(200 * time.Millisecond),
		MaxDelay: Duration(30 * time.Second), RetryAfterMax: Duration(time.Minute)}
	nineRetries := defaultRetry
	nineRetries.Attempts = 9
	wantBus := &Bus{
		APIVersion: APIVersion, Kind: KindBus,
		Metadata: Metadata{Name: "orders", Tenant: "acme"},
		Spec: BusSpec{
			Storage: BusStorage{Kafka: &BusKafkaStorage{
				Brokers: []string{"k:9092"}, Topic: "bus-orders", Group: "bus-orders-rules", ClientID: "bus", Version: "3.6.0",
				TLS:  &TLSSpec{Enabled: true, CAFile: filepath.FromSlash("conf/ca.pem")},
				SASL: &SASLSpec{Mechanism: SASLPlain, Username: "u", Password: NewSecret("${env:KEY_B}", keyB)},
			}},
			Archive: &BusArchive{Pattern: map[string]any{"source": []any{map[string]any{"prefix": "/acme/"}}}, Retention: Duration(48 * time.Hour)},
			Rules: []BusRule{
				{Name: "big-orders", Pattern: pattern, Targets: []BusTarget{
					{
						Function: &FunctionSpec{URL: "http://f/", Mode: ModeBinary, Timeout: Duration(5 * time.Second),
							Headers: map[string]Secret{"A": NewSecret("", "b")}},
						Transform: &TransformSpec{Path: "$.data.order"},
						Delivery: &AsyncDeliverySpec{
							Concurrency: ConcurrencySpec{Initial: 8, Min: 1, Max: 256, Backoff: 0.7},
							Retry:       defaultRetry,
							MaxEventAge: Duration(2 * time.Hour),
						},
						Results: &ResultsSpec{OnFailure: []RouteSpec{{Log: &LogSink{Format: LogFormatText}}}},
					},
					{
						Sink:      &RouteSpec{Kafka: &KafkaSink{Brokers: []string{"k:9092"}, Topic: "big-orders", Key: "id", ClientID: DefaultClientID}},
						Transform: &TransformSpec{Template: `{"id": "${.id}", "amount": ${.data.amount}}`},
						Retry:     &nineRetries,
						OnFailure: []RouteSpec{{Webhook: &WebhookSink{URL: "http://w/", Timeout: Duration(DefaultWebhookTimeout)}}},
					},
					{Bus: &BusRoute{Name: "orders-audit"}, Retry: &defaultRetry},
				}},
				{Name: "all", Filter: &FilterSpec{Prefix: map[string]string{"type": "com.acme."}}, Targets: []BusTarget{
					{Sink: &RouteSpec{Bus: &BusRoute{Name: "orders-audit"}}, Retry: &defaultRetry},
				}},
				{Name: "copy", Pattern: map[string]any{"type": pattern["type"], "data": pattern["data"], "source": []any{"x"}}, Targets: []BusTarget{
					{Sink: &RouteSpec{Log: &LogSink{Format: LogFormatJSON}}, Retry: &defaultRetry},
				}},
			},
		},
		Pos: Position{File: file, Line: 28, Column: 1},
	}
	if got := cfg.Buses[0]; !reflect.DeepEqual(got, wantBus) {
		t.Errorf("bus:\n%#v\nwant\n%#v", got, wantBus)
	}
	if got := cfg.Buses[0].Spec.Rules[0].Targets[2].Route(); !reflect.DeepEqual(got, &RouteSpec{Bus: &BusRoute{Name: "orders-audit"}}) {
		t.Errorf("bus target Route() = %#v", got)
	}
	if got := cfg.Buses[0].Spec.Rules[1].Targets[0].Route(); got != cfg.Buses[0].Spec.Rules[1].Targets[0].Sink {
		t.Errorf("sink target Route() = %#v", got)
	}
	if got := cfg.Buses[0].Spec.Rules[0].Targets[0].Route(); got != nil {
		t.Errorf("function target Route() = %#v", got)
	}
	audit := cfg.Buses[1]
	if got, want := audit.Spec.Storage, (BusStorage{Embedded: &BusEmbeddedStorage{}}); !reflect.DeepEqual(got, want) {
		t.Errorf("default storage = %#v", got)
	}
	if got := cfg.Pipelines[0].Spec.Results.OnSuccess[0].Bus; got == nil || got.Name != "orders" {
		t.Errorf("pipeline bus route = %#v", got)
	}
}

func TestKindDefaults(t *testing.T) {
	yaml := doc("Tenant", "{name: t1}") + "  apiKeys: [\"${env:KEY_A}\"]\n  quotas: {rate: 2.5}\n---\n" +
		doc("Tenant", "{name: default}") + "  apiKeys: [\"${env:KEY_B}\"]\n  quotas: {rate: 0.1}\n---\n" +
		doc("Function", "{name: f}") + "  url: http://f/\n---\n" +
		doc("Bus", "{name: b}") + "  storage: {kafka: {brokers: [\"k:9092\"]}}\n  archive: {}\n"
	cfg, err := kindsLoader().Parse("p.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Tenants[0].Spec, (TenantSpec{APIKeys: cfg.Tenants[0].Spec.APIKeys, Weight: 1, Quotas: TenantQuotas{Rate: 2.5, Burst: 3}}); !reflect.DeepEqual(got, want) {
		t.Errorf("tenant spec = %+v, want %+v", got, want)
	}
	if got := cfg.Tenants[1].Spec.Quotas.Burst; got != 1 {
		t.Errorf("burst of rate 0.1 = %d, want 1", got)
	}
	f := cfg.Functions[0]
	wantF := AsyncFunctionSpec{
		URL: "http://f/", Mode: ModeBinary, Timeout: Duration(30 * time.Second),
		Delivery: AsyncDeliverySpec{
			Concurrency: ConcurrencySpec{Initial: 8, Min: 1, Max: 256, Backoff: 0.7},
			Retry: RetrySpec{Attempts: 5, Backoff: BackoffExponential, Delay: Duration(200 * time.Millisecond),
				MaxDelay: Duration(30 * time.Second), RetryAfterMax: Duration(time.Minute)},
			MaxEventAge: Duration(24 * time.Hour),
		},
		MaxRequestBytes: 1 << 20,
		DedupWindow:     Duration(24 * time.Hour),
	}
	if f.Metadata.Tenant != DefaultTenant || !reflect.DeepEqual(f.Spec, wantF) || f.ID() != "default/f" {
		t.Errorf("function = %+v %+v, want %+v", f.Metadata, f.Spec, wantF)
	}
	b := cfg.Buses[0]
	if got, want := *b.Spec.Storage.Kafka, (BusKafkaStorage{Brokers: []string{"k:9092"}, Topic: "sluice-bus.default.b",
		Group: "sluice-bus.default.b", ClientID: DefaultClientID}); !reflect.DeepEqual(got, want) {
		t.Errorf("kafka storage = %+v, want %+v", got, want)
	}
	if got := b.Spec.Archive.Retention; got != Duration(7*24*time.Hour) {
		t.Errorf("archive retention = %v", got)
	}
}

// TestTenantSecretsRedacted: keys never print, whatever the output.
func TestTenantSecretsRedacted(t *testing.T) {
	cfg, err := kindsLoader().Parse("p.yaml", []byte(doc("Tenant", "{name: acme}")+"  apiKeys: [\"${env:KEY_A}\", \""+keyB+"\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	tenant := cfg.Tenants[0]
	js, err := json.Marshal(tenant)
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("tenant", "keys", tenant.Spec.APIKeys, "tenant", tenant)
	for _, out := range []string{
		fmt.Sprintf("%v", tenant), fmt.Sprintf("%+v", tenant), fmt.Sprintf("%#v", tenant),
		fmt.Sprintf("%s", tenant.Spec.APIKeys), fmt.Sprintf("%x", tenant.Spec.APIKeys), fmt.Sprint(tenant.Spec),
		string(js), logged.String(),
	} {
		if strings.Contains(out, keyA) || strings.Contains(out, keyB) || strings.Contains(out, fmt.Sprintf("%x", keyA)) {
			t.Errorf("secret printed: %s", out)
		}
	}
	if !strings.Contains(string(js), `"apiKeys":["${env:KEY_A}","[redacted]"]`) {
		t.Errorf("JSON = %s, want references and [redacted]", js)
	}
	if tenant.Spec.APIKeys[0].Value() != keyA || tenant.Spec.APIKeys[1].Value() != keyB {
		t.Errorf("keys not resolved")
	}
}

func TestByteSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want ByteSize
		str  string
	}{
		{"0", 0, "0B"},
		{"100", 100, "100B"},
		{"1000", 1000, "1KB"},
		{"1KB", 1000, "1KB"},
		{"2500KB", 2500e3, "2500KB"},
		{"1 KiB", 1024, "1KiB"},
		{"1536KiB", 1536 << 10, "1536KiB"},
		{"4MiB", 4 << 20, "4MiB"},
		{"2GB", 2e9, "2GB"},
		{"3GiB", 3 << 30, "3GiB"},
	} {
		got, err := ParseByteSize(tt.in)
		if err != nil || got != tt.want || got.String() != tt.str {
			t.Errorf("ParseByteSize(%q) = %d (%s), %v; want %d (%s)", tt.in, got, got, err, tt.want, tt.str)
		}
		var back ByteSize
		if text, _ := got.MarshalText(); back.UnmarshalText(text) != nil || back != got {
			t.Errorf("%s does not round-trip: %d", got, back)
		}
	}
	for _, in := range []string{"", "1.5MiB", "-1", "1mb", "MiB", "9999999999999GiB", "99999999999999999999"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseTransforms(t *testing.T) {
	paths := []struct {
		in   string
		want []any
		err  string
	}{
		{in: "$", want: []any{}},
		{in: "$.data.order", want: []any{"data", "order"}},
		{in: `$.data.items[0]["a.b"]['c "d"'].e_f-g`, want: []any{"data", "items", 0, "a.b", `c "d"`, "e_f-g"}},
		{in: `$["\u00e9"]`, want: []any{"é"}},
		{in: "data", err: `invalid path "data": want "$" followed by .name, [index] or ["key"] steps`},
		{in: "$.", err: `invalid path "$.": "." must be followed by a name (letters, digits, '_', '-'); write other keys as ["key"]`},
		{in: "$[-1]", err: `invalid path "$[-1]": [-1]: want an index (0, 1, ...) or a quoted key`},
		{in: "$[1", err: `invalid path "$[1": unterminated "["`},
		{in: `$["a]`, err: `invalid path "$[\"a]": unterminated ["key"]`},
		{in: `$["\q"]`, err: `invalid path "$[\"\\q\"]": bad escape in "\q"`},
		{in: "$x", err: `invalid path "$x": unexpected "x": want .name, [index] or ["key"]`},
	}
	for _, tt := range paths {
		got, err := ParseEventPath(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseEventPath(%q) error = %v, want %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseEventPath(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}

	templates := []struct {
		in   string
		want []TemplatePart
		err  string
	}{
		{in: "plain", want: []TemplatePart{{Text: "plain"}}},
		{in: `{"id": "${.id}", "n": ${.data.items[1]}}`, want: []TemplatePart{
			{Text: `{"id": "`}, {Path: []any{"id"}}, {Text: `", "n": `}, {Path: []any{"data", "items", 1}}, {Text: "}"},
		}},
		{in: "${.a}${.b}", want: []TemplatePart{{Path: []any{"a"}}, {Path: []any{"b"}}}},
		{in: "cost: $${.a} is ${.a}$", want: []TemplatePart{{Text: "cost: ${.a} is "}, {Path: []any{"a"}}, {Text: "$"}}},
		{in: "${}", err: "invalid placeholder ${}: want ${.name...} (a path without \"$\")"},
		{in: "x ${.a", err: `unterminated placeholder "${.a": want ${.path}`},
		{in: "${.a[b]}", err: "placeholder ${.a[b]}: [b]: want an index (0, 1, ...) or a quoted key"},
	}
	for _, tt := range templates {
		got, err := ParseTemplate(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseTemplate(%q) error = %v, want %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseTemplate(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
}

// TestLoadKindExamples loads examples/async and examples/bus together
// (the bus example's tenant is defined in the async one).
func TestLoadKindExamples(t *testing.T) {
	l := Loader{LookupEnv: func(name string) (string, bool) {
		return "example-value-for-" + name, true
	}}
	cfg, err := l.Config(filepath.FromSlash("../examples/async"), filepath.FromSlash("../examples/bus"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tn := range cfg.Tenants {
		got = append(got, "Tenant "+tn.Metadata.Name)
	}
	for _, f := range cfg.Functions {
		got = append(got, "Function "+f.ID())
	}
	for _, b := range cfg.Buses {
		got = append(got, "Bus "+b.ID())
	}
	for _, p := range cfg.Pipelines {
		got = append(got, "Pipeline "+p.ID())
	}
	want := []string{"Tenant acme", "Tenant beta", "Function acme/resize", "Function beta/echo", "Bus acme/orders", "Bus acme/audit", "Pipeline acme/orders-enrich"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded %q, want %q", got, want)
	}
}

// TestConfigSchema keeps docs/schema/sluice.schema.json up to date and
// checks what it says about the new kinds.
func TestConfigSchema(t *testing.T) {
	data, err := ConfigSchema()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.FromSlash("../docs/schema/sluice.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(committed) != string(data) {
		t.Errorf("docs/schema/sluice.schema.json is stale: run go generate ./pipelines")
	}
	type schema struct {
		Ref                  string                    `json:"$ref"`
		Type                 string                    `json:"type"`
		Properties           map[string]map[string]any `json:"properties"`
		Required             []string                  `json:"required"`
		MinProperties        *int                      `json:"minProperties"`
		MaxProperties        *int                      `json:"maxProperties"`
		AdditionalProperties *bool                     `json:"additionalProperties"`
		OneOf                []schema                  `json:"oneOf"`
	}
	var s struct {
		ID    string            `json:"$id"`
		OneOf []schema          `json:"oneOf"`
		Defs  map[string]schema `json:"$defs"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, o := range s.OneOf {
		refs = append(refs, o.Ref)
	}
	prop := func(def, name, key string) any { return s.Defs[def].Properties[name][key] }
	targetOneOf := [][]string{}
	for _, o := range s.Defs["BusTarget"].OneOf {
		targetOneOf = append(targetOneOf, o.Required)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"$id", s.ID, ConfigSchemaID},
		{"one of the kinds", refs, []string{"#/$defs/Bus", "#/$defs/Function", "#/$defs/Pipeline", "#/$defs/Tenant"}},
		{"kind enum", prop("Tenant", "kind", "enum"), []string{"Tenant"}},
		{"api keys are strings", prop("TenantSpec", "apiKeys", "items"), map[string]any{"type": "string"}},
		{"api keys required", s.Defs["TenantSpec"].Required, []string{"apiKeys"}},
		{"tenant metadata has no tenant", prop("TenantMetadata", "tenant", "type"), nil},
		{"weight default", prop("TenantSpec", "weight", "default"), float64(1)},
		{"size default", prop("AsyncFunctionSpec", "maxRequestBytes", "default"), "1MiB"},
		{"size is a number or a string", len(s.Defs["AsyncFunctionSpec"].Properties["maxRequestBytes"]["oneOf"].([]any)), 2},
		{"dedup default", prop("AsyncFunctionSpec", "dedupWindow", "default"), "24h"},
		{"retention default", prop("BusArchive", "retention", "default"), "168h"},
		{"storage topic not defaulted here", prop("BusKafkaStorage", "topic", "default"), nil},
		{"pattern is an object", prop("BusRule", "pattern", "type"), "object"},
		{"one target kind", targetOneOf, [][]string{{"function"}, {"sink"}, {"bus"}}},
		{"one transform", *s.Defs["TransformSpec"].MaxProperties, 1},
		{"at most one storage", *s.Defs["BusStorage"].MaxProperties, 1},
		{"bus route", prop("RouteSpec", "bus", "$ref"), "#/$defs/BusRoute"},
		{"unknown fields rejected", *s.Defs["BusTarget"].AdditionalProperties, false},
	}
	for _, c := range checks {
		if !jsonEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}

	// The Pipeline schema holds only what pipelines use.
	p, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var ps struct {
		Defs map[string]any `json:"$defs"`
	}
	if err := json.Unmarshal(p, &ps); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Pipeline", "RouteSpec", "BusRoute", "FilterSpec"} {
		if ps.Defs[name] == nil {
			t.Errorf("pipeline schema lacks %s", name)
		}
	}
	for _, name := range []string{"Bus", "Tenant", "BusTarget", "AsyncFunctionSpec"} {
		if ps.Defs[name] != nil {
			t.Errorf("pipeline schema has %s", name)
		}
	}
}

// TestReferenceCoversKinds checks that the reference documents every kind
// and says where shared types are used.
func TestReferenceCoversKinds(t *testing.T) {
	ref, err := Reference()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\n## Tenant\n", "\n## Function\n", "\n## Bus\n", "\n## TransformSpec\n",
		"At `spec.delivery.retry` (Pipeline, Function), `spec.rules[].targets[].delivery.retry` (Bus), `spec.rules[].targets[].retry` (Bus).",
		"| `spec.maxRequestBytes` | size |",
		"| `spec.rules[].pattern` | map of any |",
	} {
		if !strings.Contains(string(ref), want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}
