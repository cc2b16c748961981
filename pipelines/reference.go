package pipelines

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Reference returns docs/reference.md: the format's rules, then a table of
// fields per type, generated like Schema from the Go types, their doc
// comments and ApplyDefaults.
func Reference() ([]byte, error) {
	docs, err := typeDocs()
	if err != nil {
		return nil, err
	}
	defaults := documentedDefaults()

	// Visit the types depth-first from each kind, Pipeline first, noting
	// every path where each appears; recursion (FilterSpec in FilterSpec)
	// stops at the first repeat.
	type section struct {
		t     reflect.Type
		paths []string
		kinds [][]string // the kinds where paths[i] is
	}
	var order []*section
	byType := make(map[reflect.Type]*section)
	inProgress := make(map[reflect.Type]bool)
	var kind string
	var visit func(t reflect.Type, path string)
	visit = func(t reflect.Type, path string) {
		s, ok := byType[t]
		if !ok {
			s = &section{t: t}
			byType[t] = s
			order = append(order, s)
		}
		if i := slices.Index(s.paths, path); i >= 0 {
			if !slices.Contains(s.kinds[i], kind) {
				s.kinds[i] = append(s.kinds[i], kind)
			}
		} else {
			s.paths = append(s.paths, path)
			s.kinds = append(s.kinds, []string{kind})
		}
		if inProgress[t] {
			return
		}
		inProgress[t] = true
		defer delete(inProgress, t)
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			if st, suffix := structOf(f.Type); st != nil {
				visit(st, fieldPath(path, name)+suffix)
			}
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(referenceKinds)), slices.Sorted(maps.Keys(kinds()))) {
		return nil, fmt.Errorf("reference: referenceKinds %v are not the registered kinds", referenceKinds)
	}
	for _, kind = range referenceKinds {
		visit(reflect.TypeOf(kinds()[kind]()).Elem(), "")
	}

	var b bytes.Buffer
	b.WriteString(referenceIntro)
	for _, s := range order {
		td := docs[s.t.Name()]
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", s.t.Name(), td.doc)
		if s.paths[0] != "" {
			at := make([]string, len(s.paths))
			for i, p := range s.paths {
				at[i] = fmt.Sprintf("`%s` (%s)", p, strings.Join(s.kinds[i], ", "))
			}
			fmt.Fprintf(&b, "At %s.\n\n", strings.Join(at, ", "))
		}
		if s.t.NumField() == 0 {
			continue
		}
		b.WriteString("| Path | Type | Default | Description |\n|---|---|---|---|\n")
		typeDefaults := make(map[string]any)
		for _, d := range defaults[s.t.Name()] {
			typeDefaults[d.name] = d.value
		}
		for i := range s.t.NumField() {
			f := s.t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			typ := typeName(f.Type)
			if !strings.Contains(opts, "omitempty") || strings.Contains(f.Tag.Get("jsonschema"), "required") {
				typ += ", required"
			}
			if enum := enumValues(f); enum != "" {
				typ += ": " + enum
			}
			def := ""
			if v, ok := typeDefaults[name]; ok {
				def = fmt.Sprintf("`%v`", v)
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", fieldPath(s.paths[0], name), typ, def, escapeCell(td.fields[f.Name]))
		}
	}
	return b.Bytes(), nil
}

// referenceKinds is the order of the kinds in the reference.
var referenceKinds = []string{KindPipeline, KindFunction, KindBus, KindTenant}

// structOf returns the document struct type held by a field type (through
// pointers and slices), with the path suffix for slices ("[]").
func structOf(t reflect.Type) (reflect.Type, string) {
	suffix := ""
	for {
		switch t.Kind() {
		case reflect.Pointer:
			t = t.Elem()
		case reflect.Slice:
			t, suffix = t.Elem(), suffix+"[]"
		case reflect.Struct:
			if t == secretType {
				return nil, ""
			}
			return t, suffix
		default:
			return nil, ""
		}
	}
}

// typeName describes a field type for the reference.
func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == secretType:
		return "secret"
	case t == byteSizeType:
		return "size"
	case t.Kind() == reflect.Interface:
		return "any"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map of " + typeName(t.Elem())
	case reflect.Struct:
		return fmt.Sprintf("[%s](#%s)", t.Name(), strings.ToLower(t.Name()))
	case reflect.Int:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Float64:
		return "number"
	default:
		return t.Kind().String()
	}
}

// enumValues lists a field's jsonschema enum tag values.
func enumValues(f reflect.StructField) string {
	var vals []string
	for _, part := range strings.Split(f.Tag.Get("jsonschema"), ",") {
		if v, ok := strings.CutPrefix(part, "enum="); ok {
			vals = append(vals, "`"+v+"`")
		}
	}
	return strings.Join(vals, ", ")
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// referenceIntro is the hand-written part of docs/reference.md.
const referenceIntro = `# Configuration reference

<!-- Generated by "go generate ./pipelines" from pipelines/types*.go,
     pipelines/reference.go and the defaults. Do not edit. -->

Sluice is configured with YAML documents in the style of Kubernetes objects,
of four kinds: **Pipeline** (a source, a function, result routes),
**Function** (a function invoked asynchronously through the invoke API),
**Bus** (an event router with rules and targets) and **Tenant** (an owner
with API keys and quotas). A file may hold several documents of any kinds
separated by ` + "`---`" + `; ` + "`sluice`" + ` accepts files and directories (their ` + "`*.yaml`" + `
and ` + "`*.yml`" + ` files, not recursively).

` + "```yaml" + `
apiVersion: sluice.dev/v1
kind: Pipeline
metadata: {name: orders-billing, tenant: acme}
spec:
  source:
    kafka: {brokers: ["127.0.0.1:9092"], topics: [orders], group: billing}
  filter: {prefix: {type: "com.acme.order."}}
  function: {url: http://127.0.0.1:8080/, timeout: 10s}
  delivery:
    ordering: key
    retry: {attempts: 5, delay: 200ms}
  results:
    onSuccess: [{kafka: {topic: billing-results}}, {bus: {name: orders}}]
    onFailure: [{kafka: {topic: orders-dlq}}]
---
apiVersion: sluice.dev/v1
kind: Tenant
metadata: {name: acme}
spec:
  apiKeys: ["${env:ACME_API_KEY}"]
  weight: 2
  quotas: {maxConcurrency: 64, rate: 100, maxQueueDepth: 100000}
---
apiVersion: sluice.dev/v1
kind: Function
metadata: {name: resize, tenant: acme}
spec:
  url: http://127.0.0.1:8081/
  maxRequestBytes: 4MiB
  results:
    onFailure: [{kafka: {topic: resize-dlq, brokers: ["127.0.0.1:9092"]}}]
---
apiVersion: sluice.dev/v1
kind: Bus
metadata: {name: orders, tenant: acme}
spec:
  rules:
  - name: big-orders
    pattern: {type: [com.acme.order.created], data: {amount: [{numeric: [">", 100]}]}}
    targets:
    - function: {url: http://127.0.0.1:8082/}
      transform: {path: $.data}
    - sink: {log: {}}
` + "```" + `

## Rules

- **Strict.** Unknown fields, wrong types, unknown enum values and bad
  durations are errors. Every error names the file, line, column and field
  path, and all errors of all files are reported at once (up to 1000):
  ` + "`pipelines/orders.yaml:12:14: spec.delivery.retry.delay: invalid duration \"2x\"`" + `.
- **Identity.** Pipelines, functions and buses are identified by
  ` + "`tenant/name`" + ` (tenant ` + "`default`" + ` when not given), tenants by name; the same
  identity twice within a kind, in any files, is an error naming both places.
- **Tenants.** Without Tenant documents the configuration is single-tenant:
  ` + "`metadata.tenant`" + ` is a free label. With at least one Tenant document, every
  Pipeline, Function and Bus must belong to a defined tenant (leaving
  ` + "`tenant`" + ` out means ` + "`default`" + `, which then needs a Tenant named ` + "`default`" + `). API
  keys are secrets of at least 16 printable ASCII characters without spaces;
  no two keys of any tenants may be equal (the error names both places, never
  the key). Quotas left out or ` + "`0`" + ` are unlimited.
- **Defaults.** A field left out, or set to its zero value (` + "`0`" + `, ` + "`\"\"`" + `,
  ` + "`0s`" + `), takes the default listed below. Batch defaults apply only in
  ` + "`mode: batch`" + `. Concurrency defaults adapt to the bounds given: ` + "`max: 4`" + `
  alone starts at 4, ` + "`min: 300`" + ` alone raises max to 300. ` + "`maxDelay`" + ` defaults
  to at least ` + "`delay`" + `.
- **Exactly one.** A source, a result route, a filter node, a bus storage, a
  bus target and a transform hold exactly one key: one source kind, one sink
  kind, one filter dialect, and so on.
- **Kafka sinks** without ` + "`brokers`" + ` use the pipeline's Kafka source's brokers
  and, unless they set their own, its ` + "`tls`" + `, ` + "`sasl`" + `, ` + "`version`" + ` and ` + "`clientID`" + `.
  Functions and buses have no source: their Kafka sinks name their brokers.
- **Bus routes.** A ` + "`bus`" + ` route (` + "`{bus: {name: orders}}`" + `) or ` + "`bus`" + ` target names a
  Bus of the same tenant, which must be defined. A rule cannot target its
  own bus.
- **Functions** (the kind, and bus function targets) take one event per
  call: mode ` + "`binary`" + ` or ` + "`structured`" + `, never ` + "`batch`" + `. Their delivery has no
  ordering and no window.
- **Bus rules** match with an EventBridge event ` + "`pattern`" + ` or a CloudEvents
  ` + "`filter`" + `, not both; with neither a rule matches every event. Pattern errors
  point at the line of the offending node. Function targets have ` + "`delivery`" + `
  and ` + "`results`" + `; sink and bus targets have ` + "`retry`" + ` and ` + "`onFailure`" + `.
- **Sizes** (type *size*) are bytes (` + "`1048576`" + `) or a number with a unit:
  ` + "`B`" + `, ` + "`KB`" + `, ` + "`MB`" + `, ` + "`GB`" + ` (powers of 1000), ` + "`KiB`" + `, ` + "`MiB`" + `, ` + "`GiB`" + ` (powers of 1024).
- **Durations** are Go duration strings: ` + "`200ms`" + `, ` + "`1h30m`" + `. A bare number
  other than ` + "`0`" + ` is an error (no unit); negative durations are errors.
- **Secrets** (type *secret*) are written as ` + "`${env:NAME}`" + ` (an environment
  variable, which must be set) or ` + "`${file:PATH}`" + ` (a file's content without
  trailing newlines; relative paths are relative to the YAML file). A plain
  string is taken literally, which is discouraged. A value containing ` + "`${`" + `
  must be exactly one reference. Secret values never appear in errors, logs
  or output; references do.
- **Files** named in ` + "`tls`" + ` settings are relative to the YAML file.
- **URLs** of functions and webhooks are absolute ` + "`http`" + ` or ` + "`https`" + ` URLs
  without credentials (use secret headers).
- **YAML features.** Anchors, aliases and merge keys (` + "`<<: *base`" + `) work, e.g.
  to share broker settings.

Editors can validate files with the JSON Schema
[` + "`docs/schema/sluice.schema.json`" + `](schema/sluice.schema.json) (every kind; a
document is checked against the schema of its ` + "`kind`" + `), or
[` + "`docs/schema/pipeline.schema.json`" + `](schema/pipeline.schema.json) for files of
pipelines only, e.g. with the YAML language server:
` + "`# yaml-language-server: $schema=<path or URL of the schema>`" + `.
`
