package pipelines

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KindBus is the kind of Bus documents.
const KindBus = "Bus"

// Bus defaults.
const (
	DefaultArchiveRetention = 7 * 24 * time.Hour
	// DefaultBusKafkaPrefix starts the default topic and consumer group of
	// a bus stored in Kafka: "sluice-bus.TENANT.NAME".
	DefaultBusKafkaPrefix = "sluice-bus."
)

// Bus is one `kind: Bus` document: an EventBridge-like router. Events put
// on the bus (by its API, by `bus` result routes of pipelines and
// functions, or by `bus` targets of other buses) are stored durably, then
// every rule whose pattern or filter matches delivers them to its targets.
type Bus struct {
	// APIVersion must be "sluice.dev/v1".
	APIVersion string `yaml:"apiVersion" json:"apiVersion" jsonschema:"enum=sluice.dev/v1"`
	// Kind must be "Bus".
	Kind string `yaml:"kind" json:"kind" jsonschema:"enum=Bus"`
	// Metadata names the bus and its tenant; names are unique per tenant.
	Metadata Metadata `yaml:"metadata" json:"metadata"`
	// Spec is the bus's storage, archive and rules.
	Spec BusSpec `yaml:"spec,omitempty" json:"spec,omitempty"`

	// Pos is where the document starts (not part of the YAML).
	Pos Position `yaml:"-" json:"-"`
}

// ID identifies the bus across tenants: "tenant/name".
func (b *Bus) ID() string { return documentID(b.Metadata) }

// BusSpec is the body of a Bus.
type BusSpec struct {
	// Storage is where events put on the bus are kept until every rule
	// delivered them; default embedded.
	Storage BusStorage `yaml:"storage,omitempty" json:"storage,omitempty"`
	// Archive keeps the matching events for replay.
	Archive *BusArchive `yaml:"archive,omitempty" json:"archive,omitempty"`
	// Rules route events to targets; each event goes to every rule that
	// matches it.
	Rules []BusRule `yaml:"rules,omitempty" json:"rules,omitempty"`
}

// BusStorage holds exactly one storage; none given means embedded.
type BusStorage struct {
	// Embedded keeps events in the embedded queue (the data directory).
	Embedded *BusEmbeddedStorage `yaml:"embedded,omitempty" json:"embedded,omitempty"`
	// Kafka keeps events in a Kafka topic, so that several instances share the bus.
	Kafka *BusKafkaStorage `yaml:"kafka,omitempty" json:"kafka,omitempty"`
}

// BusEmbeddedStorage stores events in the embedded queue; it has no
// settings.
type BusEmbeddedStorage struct{}

// BusKafkaStorage stores a bus's events in one Kafka topic, consumed by a
// consumer group.
type BusKafkaStorage struct {
	// Brokers are the bootstrap brokers, "host:port".
	Brokers []string `yaml:"brokers" json:"brokers" jsonschema:"minItems=1"`
	// Topic holds the bus's events; default "sluice-bus.TENANT.NAME".
	Topic string `yaml:"topic,omitempty" json:"topic,omitempty"`
	// Group is the consumer group of the rules; default "sluice-bus.TENANT.NAME".
	Group string `yaml:"group,omitempty" json:"group,omitempty"`
	// ClientID is the Kafka client id.
	ClientID string `yaml:"clientID,omitempty" json:"clientID,omitempty"`
	// Version is the Kafka protocol version to speak (sarama's), e.g. "3.6.0".
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// TLS secures the broker connections.
	TLS *TLSSpec `yaml:"tls,omitempty" json:"tls,omitempty"`
	// SASL authenticates to the brokers.
	SASL *SASLSpec `yaml:"sasl,omitempty" json:"sasl,omitempty"`
}

// BusArchive keeps a bus's events for later replay.
type BusArchive struct {
	// Pattern selects the events archived (an event pattern, like a rule's);
	// none means every event.
	Pattern map[string]any `yaml:"pattern,omitempty" json:"pattern,omitempty"`
	// Retention is how long archived events are kept.
	Retention Duration `yaml:"retention,omitempty" json:"retention,omitempty"`
}

// BusRule sends the events it matches to its targets. It matches with a
// pattern or a filter; with neither it matches every event.
type BusRule struct {
	// Name is unique within the bus: a DNS label.
	Name string `yaml:"name" json:"name"`
	// Pattern is an EventBridge event pattern matched against the event in
	// CloudEvents JSON form (attributes, extensions and data), e.g.
	// {type: [com.acme.order.created], data: {amount: [{numeric: [">", 100]}]}}.
	// Not together with filter.
	Pattern map[string]any `yaml:"pattern,omitempty" json:"pattern,omitempty"`
	// Filter is a CloudEvents Subscriptions API filter, as in a pipeline.
	// Not together with pattern.
	Filter *FilterSpec `yaml:"filter,omitempty" json:"filter,omitempty"`
	// Targets receive every matching event, each independently (one
	// target's failure does not hold back the others).
	Targets []BusTarget `yaml:"targets" json:"targets" jsonschema:"minItems=1"`
}

// BusTarget is where a rule delivers: exactly one of function, sink or
// bus. Function targets have delivery and results; sink and bus targets
// have retry and onFailure.
type BusTarget struct {
	// Function calls a CloudEvents HTTP endpoint (binary or structured mode).
	Function *FunctionSpec `yaml:"function,omitempty" json:"function,omitempty"`
	// Sink writes the event to a route (kafka, webhook, log, rabbitmq, rocketmq or bus).
	Sink *RouteSpec `yaml:"sink,omitempty" json:"sink,omitempty"`
	// Bus puts the event on another bus of the same tenant; the same as
	// sink: {bus: ...}.
	Bus *BusRoute `yaml:"bus,omitempty" json:"bus,omitempty"`
	// Transform rewrites the event's data before delivery.
	Transform *TransformSpec `yaml:"transform,omitempty" json:"transform,omitempty"`
	// Delivery is the concurrency and retry policy of a function target.
	Delivery *AsyncDeliverySpec `yaml:"delivery,omitempty" json:"delivery,omitempty"`
	// Results routes a function target's results and dead letters.
	Results *ResultsSpec `yaml:"results,omitempty" json:"results,omitempty"`
	// Retry is the retry policy of a sink or bus target.
	Retry *RetrySpec `yaml:"retry,omitempty" json:"retry,omitempty"`
	// OnFailure receives the events a sink or bus target failed to take
	// (dead letters, with error extensions).
	OnFailure []RouteSpec `yaml:"onFailure,omitempty" json:"onFailure,omitempty"`
}

// Route returns where a sink or bus target writes (nil for a function
// target): its sink, or its bus as a route.
func (t *BusTarget) Route() *RouteSpec {
	if t.Bus != nil {
		return &RouteSpec{Bus: t.Bus}
	}
	return t.Sink
}

// TransformSpec rewrites an event's data: exactly one of path and template.
// Both read the event in CloudEvents JSON form: attributes and extensions
// by name, data under "data" (parsed when it is JSON).
type TransformSpec struct {
	// Path selects the new data, e.g. "$.data.order": "$", then ".name",
	// "[index]" or ["key"] steps. A missing value gives null data.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// Template is the new data as text with ${PATH} placeholders, PATH as in
	// path without the "$" (${.id}, ${.data.amount}). A string value is
	// inserted JSON-escaped without quotes, other values as JSON, a missing
	// one as null; "$${" writes a literal "${". The result is
	// application/json when it parses as JSON, text/plain otherwise.
	Template string `yaml:"template,omitempty" json:"template,omitempty"`
}

// BusRoute names a bus of the same tenant to put events on.
type BusRoute struct {
	// Name is the bus's metadata.name.
	Name string `yaml:"name" json:"name"`
}

func (b *Bus) setPos(pos Position) { b.Pos = pos }
func (b *Bus) addTo(cfg *Config)   { cfg.Buses = append(cfg.Buses, b) }
func (b *Bus) tenant() string      { return b.Metadata.Tenant }

func (b *Bus) id() string {
	if b.Metadata.Name == "" {
		return ""
	}
	return b.ID()
}

func (b *Bus) resolveFiles(dir string) {
	var tls []*TLSSpec
	if k := b.Spec.Storage.Kafka; k != nil {
		tls = append(tls, k.TLS)
	}
	for _, r := range b.Spec.Rules {
		for _, t := range r.Targets {
			if t.Sink != nil {
				tls = append(tls, routesTLS([]RouteSpec{*t.Sink})...)
			}
			if t.Results != nil {
				tls = append(tls, routesTLS(t.Results.OnSuccess, t.Results.OnFailure)...)
			}
			tls = append(tls, routesTLS(t.OnFailure)...)
		}
	}
	resolveTLSFiles(dir, tls...)
}

func (b *Bus) busRefs() []busRef {
	var refs []busRef
	for i, r := range b.Spec.Rules {
		for j := range r.Targets {
			t := &r.Targets[j]
			p := indexPath(indexPath("spec.rules", i)+".targets", j)
			if t.Bus != nil {
				refs = append(refs, busRef{path: p + ".bus.name", name: t.Bus.Name})
			}
			if t.Sink != nil && t.Sink.Bus != nil {
				refs = append(refs, busRef{path: p + ".sink.bus.name", name: t.Sink.Bus.Name})
			}
			if t.Results != nil {
				refs = resultsBusRefs(refs, p+".results", t.Results)
			}
			refs = routesBusRefs(refs, p+".onFailure", t.OnFailure)
		}
	}
	return refs
}

func (b *Bus) applyDefaults() {
	setDefault(&b.APIVersion, APIVersion)
	setDefault(&b.Kind, KindBus)
	setDefault(&b.Metadata.Tenant, DefaultTenant)
	s := &b.Spec
	st := &s.Storage
	if st.Embedded == nil && st.Kafka == nil {
		st.Embedded = &BusEmbeddedStorage{}
	}
	if k := st.Kafka; k != nil {
		// Dots cannot be in names, so TENANT.NAME is unambiguous.
		name := DefaultBusKafkaPrefix + b.Metadata.Tenant + "." + b.Metadata.Name
		setDefault(&k.Topic, name)
		setDefault(&k.Group, name)
		setDefault(&k.ClientID, DefaultClientID)
	}
	if a := s.Archive; a != nil {
		setDefault(&a.Retention, Duration(DefaultArchiveRetention))
	}
	for i := range s.Rules {
		for j := range s.Rules[i].Targets {
			busTargetDefaults(&s.Rules[i].Targets[j])
		}
	}
}

// busTargetDefaults fills a function target's delivery, or a sink or bus
// target's retry; the other pair is left for validation to refuse.
func busTargetDefaults(t *BusTarget) {
	if t.Function != nil {
		functionDefaults(t.Function)
		if t.Delivery == nil {
			t.Delivery = &AsyncDeliverySpec{}
		}
	} else if t.Sink != nil || t.Bus != nil {
		if t.Retry == nil {
			t.Retry = &RetrySpec{}
		}
	}
	if t.Delivery != nil {
		asyncDeliveryDefaults(t.Delivery)
	}
	if t.Retry != nil {
		retryDefaults(t.Retry)
	}
	if t.Sink != nil {
		routeDefaults(t.Sink, &SourceSpec{})
	}
	if t.Results != nil {
		resultsDefaults(t.Results, &SourceSpec{})
	}
	routesDefaults(t.OnFailure, &SourceSpec{})
}

func (b *Bus) validate(v *validator) {
	validateMetadata(v, &b.Metadata)
	s := &b.Spec
	st := &s.Storage
	var set []string
	if st.Embedded != nil {
		set = append(set, "embedded")
	}
	if st.Kafka != nil {
		set = append(set, "kafka")
	}
	v.exactlyOne("spec.storage", []string{"embedded", "kafka"}, set)
	if k := st.Kafka; k != nil {
		p := "spec.storage.kafka"
		validateBrokers(v, p+".brokers", k.Brokers)
		validateTopic(v, p+".topic", k.Topic)
		v.required(p+".group", k.Group)
		validateKafkaVersion(v, p+".version", k.Version)
		if k.TLS != nil {
			validateTLS(v, p+".tls", k.TLS)
		}
		if k.SASL != nil {
			validateSASL(v, p+".sasl", k.SASL)
		}
	}
	if a := s.Archive; a != nil {
		if a.Pattern != nil {
			validatePattern(v, "spec.archive.pattern", a.Pattern)
		}
		v.positive("spec.archive.retention", a.Retention)
	}
	names := make(map[string]string, len(s.Rules)) // rule name → path of its first use
	for i := range s.Rules {
		r := &s.Rules[i]
		p := indexPath("spec.rules", i)
		if v.required(p+".name", r.Name) {
			v.dnsLabel(p+".name", r.Name)
			if first, dup := names[r.Name]; dup {
				v.errorf(p+".name", "duplicate rule %q: first defined at %s", r.Name, v.pos.value(first))
			} else {
				names[r.Name] = p + ".name"
			}
		}
		if r.Pattern != nil && r.Filter != nil {
			v.errorf(p+".filter", "only one of pattern or filter may be set")
		}
		if r.Pattern != nil {
			validatePattern(v, p+".pattern", r.Pattern)
		}
		if r.Filter != nil {
			validateFilter(v, p+".filter", r.Filter)
		}
		if v.requiredList(p+".targets", len(r.Targets)) {
			for j := range r.Targets {
				validateBusTarget(v, indexPath(p+".targets", j), &r.Targets[j], b.Metadata.Name)
			}
		}
	}
}

func validateBusTarget(v *validator, path string, t *BusTarget, bus string) {
	var set []string
	if t.Function != nil {
		set = append(set, "function")
	}
	if t.Sink != nil {
		set = append(set, "sink")
	}
	if t.Bus != nil {
		set = append(set, "bus")
	}
	v.exactlyOne(path, []string{"function", "sink", "bus"}, set)
	if f := t.Function; f != nil {
		validateFunction(v, path+".function", f, false)
		for _, field := range []struct {
			name string
			set  bool
		}{{"retry", t.Retry != nil}, {"onFailure", t.OnFailure != nil}} {
			if field.set {
				v.errorf(path+"."+field.name, "%s is for sink and bus targets; a function target has delivery and results", field.name)
			}
		}
	} else {
		for _, field := range []struct {
			name string
			set  bool
		}{{"delivery", t.Delivery != nil}, {"results", t.Results != nil}} {
			if field.set {
				v.errorf(path+"."+field.name, "%s is for function targets; a sink or bus target has retry and onFailure", field.name)
			}
		}
	}
	if t.Sink != nil {
		validateRoute(v, path+".sink", t.Sink, nil)
	}
	for _, r := range []struct {
		path string
		r    *BusRoute
	}{{path + ".bus", t.Bus}, {path + ".sink.bus", sinkBus(t.Sink)}} {
		if r.r != nil && r.r.Name == bus && bus != "" {
			v.errorf(r.path+".name", "a rule cannot target its own bus: every event it delivers would match again")
		}
	}
	if t.Bus != nil && v.required(path+".bus.name", t.Bus.Name) {
		v.dnsLabel(path+".bus.name", t.Bus.Name)
	}
	if t.Transform != nil {
		validateTransform(v, path+".transform", t.Transform)
	}
	if t.Delivery != nil {
		validateAsyncDelivery(v, path+".delivery", t.Delivery)
	}
	if t.Results != nil {
		validateResults(v, path+".results", t.Results, nil)
	}
	if t.Retry != nil {
		validateRetry(v, path+".retry", t.Retry)
	}
	validateRoutes(v, path+".onFailure", t.OnFailure, nil)
}

func sinkBus(r *RouteSpec) *BusRoute {
	if r == nil {
		return nil
	}
	return r.Bus
}

// validatePattern checks an event pattern: not empty here, the rest by the
// loader's pattern hook, whose errors are placed at the pattern's nodes.
func validatePattern(v *validator, path string, pattern map[string]any) {
	if len(pattern) == 0 {
		v.errorf(path, "must not be empty: leave pattern out to match every event")
		return
	}
	if v.checkPattern == nil || v.reported(path) {
		return
	}
	err := v.checkPattern(pattern)
	if err == nil {
		return
	}
	for _, e := range patternErrors(err) {
		p := path
		for _, seg := range e.Segments {
			switch s := seg.(type) {
			case string:
				p = keyPath(p, s)
			case int:
				p = indexPath(p, s)
			}
		}
		v.errs = append(v.errs, &FieldError{Pos: v.pos.value(p), Path: p, Msg: e.Msg, Err: e})
	}
}

// PatternError is one problem a Loader's CheckPattern hook found in an
// event pattern, located inside the pattern so that the loader can report
// it at its line.
type PatternError struct {
	// Segments is the path from the pattern's root: object keys (string)
	// and array indexes (int); empty for the whole pattern.
	Segments []any
	// Msg says what is wrong.
	Msg string
}

func (e *PatternError) Error() string { return e.Msg }

// patternErrors flattens what CheckPattern returned: every *PatternError
// found by unwrapping, and any other leaf error as a problem with the
// whole pattern.
func patternErrors(err error) []*PatternError {
	var pe *PatternError
	if errors.As(err, &pe) && pe == err {
		return []*PatternError{pe}
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		var out []*PatternError
		for _, e := range u.Unwrap() {
			if e != nil {
				out = append(out, patternErrors(e)...)
			}
		}
		return out
	case interface{ Unwrap() error }:
		if inner := u.Unwrap(); inner != nil {
			return patternErrors(inner)
		}
	}
	return []*PatternError{{Msg: err.Error()}}
}

func validateTransform(v *validator, path string, t *TransformSpec) {
	var set []string
	if t.Path != "" {
		set = append(set, "path")
	}
	if t.Template != "" {
		set = append(set, "template")
	}
	v.exactlyOne(path, []string{"path", "template"}, set)
	if t.Path != "" {
		if _, err := ParseEventPath(t.Path); err != nil {
			v.errorf(path+".path", "%v", err)
		}
	}
	if t.Template != "" {
		if _, err := ParseTemplate(t.Template); err != nil {
			v.errorf(path+".template", "%v", err)
		}
	}
}

// ParseEventPath parses a transform path ("$.data.items[0]['a b']") into
// its steps: object keys (string) and array indexes (int); "$" alone is
// the whole event. The bus engine uses it to apply transforms.
func ParseEventPath(s string) ([]any, error) {
	rest, ok := strings.CutPrefix(s, "$")
	if !ok {
		return nil, fmt.Errorf("invalid path %q: want \"$\" followed by .name, [index] or [\"key\"] steps", s)
	}
	steps := []any{}
	for rest != "" {
		var err error
		var step any
		step, rest, err = pathStep(rest)
		if err != nil {
			return nil, fmt.Errorf("invalid path %q: %w", s, err)
		}
		steps = append(steps, step)
	}
	return steps, nil
}

// pathStep parses the step at the start of s.
func pathStep(s string) (step any, rest string, err error) {
	switch s[0] {
	case '.':
		end := 1
		for end < len(s) && isNameByte(s[end]) {
			end++
		}
		if end == 1 {
			return nil, "", errors.New(`"." must be followed by a name (letters, digits, '_', '-'); write other keys as ["key"]`)
		}
		return s[1:end], s[end:], nil
	case '[':
		end := strings.IndexByte(s, ']')
		if len(s) > 1 && (s[1] == '"' || s[1] == '\'') {
			end = closingQuote(s[1:], s[1]) // after "[" and the opening quote
			if end < 0 || end+2 >= len(s) || s[end+2] != ']' {
				return nil, "", errors.New("unterminated [\"key\"]")
			}
			key := s[2 : end+1]
			if s[1] == '"' {
				var uerr error
				if key, uerr = strconv.Unquote(s[1 : end+2]); uerr != nil {
					return nil, "", fmt.Errorf("bad escape in %s", s[1:end+2])
				}
			}
			return key, s[end+3:], nil
		}
		if end < 0 {
			return nil, "", errors.New(`unterminated "["`)
		}
		i, cerr := strconv.Atoi(s[1:end])
		if cerr != nil || i < 0 || strings.HasPrefix(s[1:end], "+") {
			return nil, "", fmt.Errorf("[%s]: want an index (0, 1, ...) or a quoted key", s[1:end])
		}
		return i, s[end+1:], nil
	}
	return nil, "", fmt.Errorf("unexpected %q: want .name, [index] or [\"key\"]", s[:1])
}

// closingQuote returns the index in s (which starts with quote q) of the
// quote closing it, skipping backslash escapes; -1 if there is none.
func closingQuote(s string, q byte) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case q:
			return i
		}
	}
	return -1
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// TemplatePart is a piece of a parsed transform template: literal Text, or
// the value at Path when Path is not nil.
type TemplatePart struct {
	Text string
	Path []any
}

// ParseTemplate parses a transform template into literal text and
// placeholders. The bus engine uses it to apply transforms.
func ParseTemplate(s string) ([]TemplatePart, error) {
	var parts []TemplatePart
	var text strings.Builder
	for rest := s; rest != ""; {
		i := strings.Index(rest, "${")
		if i < 0 {
			text.WriteString(rest)
			break
		}
		if i > 0 && rest[i-1] == '$' { // "$${" is a literal "${"
			text.WriteString(rest[:i-1] + "${")
			rest = rest[i+2:]
			continue
		}
		text.WriteString(rest[:i])
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unterminated placeholder %q: want ${.path}", rest[i:])
		}
		inner := rest[i+2 : i+end]
		if !strings.HasPrefix(inner, ".") && !strings.HasPrefix(inner, "[") {
			return nil, fmt.Errorf("invalid placeholder ${%s}: want ${.name...} (a path without \"$\")", inner)
		}
		path, err := ParseEventPath("$" + inner)
		if err != nil {
			return nil, fmt.Errorf("placeholder ${%s}: %w", inner, errors.Unwrap(err))
		}
		if text.Len() > 0 {
			parts = append(parts, TemplatePart{Text: text.String()})
			text.Reset()
		}
		parts = append(parts, TemplatePart{Path: path})
		rest = rest[i+end+1:]
	}
	if text.Len() > 0 {
		parts = append(parts, TemplatePart{Text: text.String()})
	}
	return slices.Clip(parts), nil
}
