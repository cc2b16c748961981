package pipelines

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Validate checks a Pipeline built in code (after ApplyDefaults) with the
// rules the loader applies. It returns nil or a *LoadError whose errors
// carry field paths but no positions. Secrets are taken as they are.
func Validate(p *Pipeline) error {
	v := &validator{}
	if p.APIVersion != APIVersion {
		v.errorf("apiVersion", "unsupported apiVersion %q: want %q", p.APIVersion, APIVersion)
	}
	if p.Kind != KindPipeline {
		v.errorf("kind", "kind is %q: want %q", p.Kind, KindPipeline)
	}
	p.validate(v)
	return errorOrNil(v.errs)
}

// validator collects the semantic errors of one document after defaults.
// pos is nil for documents built in code.
type validator struct {
	pos positions
	// bad holds the paths the decoder already reported; errors at or below
	// them would only be consequences ("must not be empty" after "expected
	// a sequence").
	bad  map[string]bool
	errs []*FieldError
	// checkPattern is the loader's CheckPattern hook; nil skips the check.
	checkPattern func(raw any) error
}

// newValidator returns a validator for a decoded document.
func newValidator(pos positions, decodeErrs []*FieldError) *validator {
	bad := make(map[string]bool, len(decodeErrs))
	for _, e := range decodeErrs {
		bad[e.Path] = true
	}
	return &validator{pos: pos, bad: bad}
}

// reported reports whether path or one of its ancestors has a decode error.
func (v *validator) reported(path string) bool {
	for {
		if v.bad[path] {
			return true
		}
		if path == "" {
			return false
		}
		path = parentPath(path)
	}
}

// errorf reports a problem with path's value, at its position.
func (v *validator) errorf(path, format string, args ...any) {
	if v.reported(path) {
		return
	}
	v.errs = append(v.errs, &FieldError{Pos: v.pos.value(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// keyErrorf reports a problem with the key naming path (a map key), at
// the key.
func (v *validator) keyErrorf(path, format string, args ...any) {
	if v.reported(path) {
		return
	}
	v.errs = append(v.errs, &FieldError{Pos: v.pos.key(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// missing reports that path is required but was not written, at its
// parent's key ("kafka:" for a missing spec.source.kafka.group).
func (v *validator) missing(path, why string) {
	if v.reported(path) {
		return
	}
	msg := "missing required field"
	if why != "" {
		msg += " (" + why + ")"
	}
	v.errs = append(v.errs, &FieldError{Pos: v.pos.key(parentPath(path)), Path: path, Msg: msg})
}

// required reports an empty string: missing if not written, else empty.
func (v *validator) required(path, s string) bool {
	switch {
	case s != "":
		return true
	case v.pos.has(path):
		v.errorf(path, "must not be empty")
	default:
		v.missing(path, "")
	}
	return false
}

// requiredList reports an empty list like required does.
func (v *validator) requiredList(path string, n int) bool {
	switch {
	case n > 0:
		return true
	case v.pos.has(path):
		v.errorf(path, "must not be empty")
	default:
		v.missing(path, "")
	}
	return false
}

// oneOf reports a value outside an enumeration.
func (v *validator) oneOf(path, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	v.errorf(path, "invalid value %q: want %s", s, orList(allowed))
}

// exactlyOne reports unless exactly one of the named alternatives is set.
// None set because the one written failed to decode is not reported again.
func (v *validator) exactlyOne(path string, names []string, set []string) {
	if len(set) == 0 {
		for _, n := range names {
			if v.bad[fieldPath(path, n)] {
				return
			}
		}
	}
	switch {
	case len(set) == 1:
	case len(set) > 1:
		v.errorf(path, "only one of %s may be set, got %s", orList(names), strings.Join(set, " and "))
	case v.pos.has(path):
		v.errorf(path, "one of %s is required", orList(names))
	default:
		v.missing(path, "one of "+orList(names))
	}
}

// orList formats ["a","b","c"] as "a, b or c".
func orList(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// dnsLabelRE is the syntax of names and tenants.
var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (v *validator) dnsLabel(path, s string) {
	if !dnsLabelRE.MatchString(s) {
		v.errorf(path, "invalid name %q: want lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters", s)
	}
}

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.errorf(path, "must be positive")
	}
}

func (v *validator) notNegative(path string, d Duration) {
	if d < 0 {
		v.errorf(path, "must not be negative")
	}
}

func (v *validator) atLeast(path string, n, least int) {
	if n < least {
		v.errorf(path, "must be at least %d, got %d", least, n)
	}
}

func (p *Pipeline) validate(v *validator) {
	validateMetadata(v, &p.Metadata)
	s := &p.Spec
	validateSource(v, "spec.source", &s.Source)
	if s.Filter != nil {
		validateFilter(v, "spec.filter", s.Filter)
	}
	if s.Function == nil {
		// Without a function the source's events are the results.
		if len(s.Results.OnSuccess) == 0 {
			v.missing("spec.function", "or results.onSuccess, for the source events themselves")
		}
	} else {
		validateFunction(v, "spec.function", s.Function, true)
	}
	validateDelivery(v, "spec.delivery", &s.Delivery)
	validateResults(v, "spec.results", &s.Results, s.Source.Kafka)
}

// validateMetadata checks the metadata of a document owned by a tenant.
func validateMetadata(v *validator, m *Metadata) {
	if v.required("metadata.name", m.Name) {
		v.dnsLabel("metadata.name", m.Name)
	}
	if m.Tenant != "" {
		v.dnsLabel("metadata.tenant", m.Tenant)
	}
	if _, ok := m.Labels[""]; ok {
		v.errorf("metadata.labels", "label keys must not be empty")
	}
}

func validateSource(v *validator, path string, s *SourceSpec) {
	var set []string
	if s.Kafka != nil {
		set = append(set, "kafka")
	}
	if s.RabbitMQ != nil {
		set = append(set, "rabbitmq")
	}
	if s.RocketMQ != nil {
		set = append(set, "rocketmq")
	}
	v.exactlyOne(path, []string{"kafka", "rabbitmq", "rocketmq"}, set)
	if s.RabbitMQ != nil {
		validateRabbitMQSource(v, path+".rabbitmq", s.RabbitMQ)
	}
	if s.RocketMQ != nil {
		validateRocketMQSource(v, path+".rocketmq", s.RocketMQ)
	}
	if k := s.Kafka; k != nil {
		path := path + ".kafka"
		validateBrokers(v, path+".brokers", k.Brokers)
		if v.requiredList(path+".topics", len(k.Topics)) {
			for i, t := range k.Topics {
				validateTopic(v, indexPath(path+".topics", i), t)
			}
		}
		v.required(path+".group", k.Group)
		v.oneOf(path+".start", k.Start, StartEarliest, StartLatest)
		validateKafkaVersion(v, path+".version", k.Version)
		v.required(path+".eventType", k.EventType)
		if k.TLS != nil {
			validateTLS(v, path+".tls", k.TLS)
		}
		if k.SASL != nil {
			validateSASL(v, path+".sasl", k.SASL)
		}
	}
}

func validateBrokers(v *validator, path string, brokers []string) {
	if !v.requiredList(path, len(brokers)) {
		return
	}
	for i, b := range brokers {
		host, port, err := net.SplitHostPort(b)
		if err == nil && host == "" {
			err = fmt.Errorf("no host")
		}
		if err == nil {
			if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 {
				err = fmt.Errorf("bad port")
			}
		}
		if err != nil {
			v.errorf(indexPath(path, i), "invalid broker address %q: want host:port", b)
		}
	}
}

// kafkaTopicRE is Kafka's topic name syntax.
var kafkaTopicRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

func validateTopic(v *validator, path, topic string) {
	if v.required(path, topic) && !kafkaTopicRE.MatchString(topic) {
		v.errorf(path, "invalid topic %q: want letters, digits, '.', '_' and '-', at most 249 characters", topic)
	}
}

// kafkaVersionRE is the syntax sarama.ParseKafkaVersion accepts.
var kafkaVersionRE = regexp.MustCompile(`^\d+\.\d+\.\d+(\.\d+)?$`)

func validateKafkaVersion(v *validator, path, version string) {
	if version != "" && !kafkaVersionRE.MatchString(version) {
		v.errorf(path, "invalid Kafka version %q: want e.g. \"3.6.0\"", version)
	}
}

func validateTLS(v *validator, path string, t *TLSSpec) {
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		v.errorf(path, "TLS settings are given but enabled is false; set enabled: true")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.errorf(path, "certFile and keyFile must be given together")
	}
}

func validateSASL(v *validator, path string, s *SASLSpec) {
	if v.required(path+".mechanism", s.Mechanism) {
		v.oneOf(path+".mechanism", s.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
	}
	v.required(path+".username", s.Username)
	if s.Password.IsZero() {
		v.required(path+".password", "")
	}
}

// filterDialects are the CloudEvents Subscriptions API filter dialects.
var filterDialects = []string{"exact", "prefix", "suffix", "all", "any", "not", "sql"}

// attributeRE is the syntax of CloudEvents attribute names; the filter
// matches them case-insensitively, so upper case is accepted.
var attributeRE = regexp.MustCompile(`^[A-Za-z0-9]+$`)

func validateFilter(v *validator, path string, f *FilterSpec) {
	attrs := []struct {
		name string
		m    map[string]string
	}{{"exact", f.Exact}, {"prefix", f.Prefix}, {"suffix", f.Suffix}}
	lists := []struct {
		name string
		l    []FilterSpec
	}{{"all", f.All}, {"any", f.Any}}

	var set []string
	for _, a := range attrs {
		if a.m != nil {
			set = append(set, a.name)
		}
	}
	for _, l := range lists {
		if l.l != nil {
			set = append(set, l.name)
		}
	}
	if f.Not != nil {
		set = append(set, "not")
	}
	if f.SQL != "" {
		set = append(set, "sql")
	}
	v.exactlyOne(path, filterDialects, set)

	for _, a := range attrs {
		if a.m == nil {
			continue
		}
		if len(a.m) == 0 {
			v.errorf(path+"."+a.name, "must not be empty")
		}
		for _, k := range slices.Sorted(maps.Keys(a.m)) {
			if !attributeRE.MatchString(k) {
				v.keyErrorf(keyPath(path+"."+a.name, k), "invalid attribute name %q: want letters and digits", k)
			}
		}
	}
	for _, l := range lists {
		if l.l == nil {
			continue
		}
		if len(l.l) == 0 {
			v.errorf(path+"."+l.name, "must not be empty")
		}
		for i := range l.l {
			validateFilter(v, indexPath(path+"."+l.name, i), &l.l[i])
		}
	}
	if f.Not != nil {
		validateFilter(v, path+".not", f.Not)
	}
	if f.SQL != "" {
		if _, err := ParseCESQL(f.SQL); err != nil {
			v.errorf(path+".sql", "%v", err)
		}
	}
}

// validateURL checks an endpoint: absolute http or https, with a host and
// without credentials (those belong in secret headers). The URL is quoted
// in errors only when it holds no credentials.
func validateURL(v *validator, path, raw string) {
	if !v.required(path, raw) {
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		v.errorf(path, "invalid URL: want an absolute http or https URL")
	case u.User != nil:
		v.errorf(path, "URL contains credentials; pass them in headers with a secret reference")
	case u.Scheme != "http" && u.Scheme != "https":
		v.errorf(path, "invalid URL %q: want an absolute http or https URL", raw)
	case u.Host == "":
		v.errorf(path, "invalid URL %q: no host", raw)
	}
}

func validateHeaders(v *validator, path string, h map[string]Secret) {
	for _, name := range slices.Sorted(maps.Keys(h)) {
		val := h[name]
		p := keyPath(path, name)
		if !isToken(name) {
			v.keyErrorf(p, "invalid header name %q", name)
		}
		if strings.ContainsAny(val.Value(), "\r\n\x00") {
			v.errorf(p, "header value contains a line break or NUL")
		}
	}
}

// isToken reports whether s is an HTTP token (RFC 9110), as header names are.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validateFunction checks a function endpoint; batch mode only where a
// batch of events can be formed (pipelines, not invocations or bus targets).
func validateFunction(v *validator, path string, f *FunctionSpec, batch bool) {
	validateURL(v, path+".url", f.URL)
	switch {
	case batch:
		v.oneOf(path+".mode", f.Mode, ModeBinary, ModeStructured, ModeBatch)
	case f.Mode == ModeBatch:
		v.errorf(path+".mode", "mode batch is only for pipelines: events come here one at a time; want binary or structured")
	default:
		v.oneOf(path+".mode", f.Mode, ModeBinary, ModeStructured)
	}
	v.positive(path+".timeout", f.Timeout)
	validateHeaders(v, path+".headers", f.Headers)
	switch b := f.Batch; {
	case b == nil:
	case f.Mode != ModeBatch:
		v.errorf(path+".batch", "batch settings require mode: batch")
	default:
		v.atLeast(path+".batch.maxEvents", b.MaxEvents, 1)
		v.notNegative(path+".batch.linger", b.Linger)
	}
}

func validateDelivery(v *validator, path string, d *DeliverySpec) {
	v.oneOf(path+".ordering", d.Ordering, OrderingKey, OrderingPartition, OrderingNone)
	validateConcurrency(v, path+".concurrency", &d.Concurrency)
	v.atLeast(path+".window", d.Window, 1)
	validateRetry(v, path+".retry", &d.Retry)
	v.positive(path+".maxEventAge", d.MaxEventAge)
}

func validateConcurrency(v *validator, cp string, c *ConcurrencySpec) {
	v.atLeast(cp+".min", c.Min, 1)
	switch {
	case c.Min > c.Max:
		v.errorf(cp+".min", "min %d is above max %d", c.Min, c.Max)
	case c.Initial < c.Min:
		v.errorf(cp+".initial", "initial %d is below min %d", c.Initial, c.Min)
	case c.Initial > c.Max:
		v.errorf(cp+".initial", "initial %d is above max %d", c.Initial, c.Max)
	}
	if c.Backoff < 0.5 || c.Backoff > 0.9 {
		v.errorf(cp+".backoff", "backoff %g is outside [0.5, 0.9]", c.Backoff)
	}
	v.notNegative(cp+".latencyThreshold", c.LatencyThreshold)
}

func validateRetry(v *validator, rp string, r *RetrySpec) {
	v.atLeast(rp+".attempts", r.Attempts, 1)
	v.oneOf(rp+".backoff", r.Backoff, BackoffExponential, BackoffConstant)
	v.notNegative(rp+".delay", r.Delay)
	v.notNegative(rp+".maxDelay", r.MaxDelay)
	if r.MaxDelay < r.Delay {
		v.errorf(rp+".maxDelay", "maxDelay %s is below delay %s", r.MaxDelay, r.Delay)
	}
	v.notNegative(rp+".retryAfterMax", r.RetryAfterMax)
}

// validateResults checks result routes; src is the Kafka source Kafka
// sinks take their defaults from, or nil.
func validateResults(v *validator, path string, res *ResultsSpec, src *KafkaSource) {
	validateRoutes(v, path+".onSuccess", res.OnSuccess, src)
	validateRoutes(v, path+".onFailure", res.OnFailure, src)
}

func validateRoutes(v *validator, path string, routes []RouteSpec, src *KafkaSource) {
	for i := range routes {
		validateRoute(v, indexPath(path, i), &routes[i], src)
	}
}

// routeKinds are the sinks of a RouteSpec, in the order of its fields.
var routeKinds = []string{"kafka", "webhook", "log", "rabbitmq", "rocketmq", "bus"}

func validateRoute(v *validator, p string, r *RouteSpec, src *KafkaSource) {
	var set []string
	if r.Kafka != nil {
		set = append(set, "kafka")
	}
	if r.Webhook != nil {
		set = append(set, "webhook")
	}
	if r.Log != nil {
		set = append(set, "log")
	}
	if r.RabbitMQ != nil {
		set = append(set, "rabbitmq")
	}
	if r.RocketMQ != nil {
		set = append(set, "rocketmq")
	}
	if r.Bus != nil {
		set = append(set, "bus")
	}
	v.exactlyOne(p, routeKinds, set)
	if b := r.Bus; b != nil && v.required(p+".bus.name", b.Name) {
		// Whether the bus exists is checked across documents.
		v.dnsLabel(p+".bus.name", b.Name)
	}
	if r.RabbitMQ != nil {
		validateRabbitMQSink(v, p+".rabbitmq", r.RabbitMQ)
	}
	if r.RocketMQ != nil {
		validateRocketMQSink(v, p+".rocketmq", r.RocketMQ)
	}
	if k := r.Kafka; k != nil {
		validateKafkaSink(v, p+".kafka", k, src)
	}
	if w := r.Webhook; w != nil {
		wp := p + ".webhook"
		validateURL(v, wp+".url", w.URL)
		validateWebhookSecret(v, wp+".secret", w.Secret)
		validateHeaders(v, wp+".headers", w.Headers)
		v.positive(wp+".timeout", w.Timeout)
	}
	if l := r.Log; l != nil {
		v.oneOf(p+".log.format", l.Format, LogFormatJSON, LogFormatText)
	}
}

func validateKafkaSink(v *validator, path string, k *KafkaSink, src *KafkaSource) {
	switch {
	case len(k.Brokers) == 0 && src == nil && !v.pos.has(path+".brokers"):
		v.missing(path+".brokers", "there is no Kafka source to take them from")
	case src != nil && slices.Equal(k.Brokers, src.Brokers):
		// Taken from the source (or the same): checked there.
	default:
		validateBrokers(v, path+".brokers", k.Brokers)
	}
	validateTopic(v, path+".topic", k.Topic)
	v.required(path+".key", k.Key)
	validateKafkaVersion(v, path+".version", k.Version)
	// Settings shared with the source were checked there.
	if k.TLS != nil && (src == nil || k.TLS != src.TLS) {
		validateTLS(v, path+".tls", k.TLS)
	}
	if k.SASL != nil && (src == nil || k.SASL != src.SASL) {
		validateSASL(v, path+".sasl", k.SASL)
	}
}

// validateWebhookSecret checks the Standard Webhooks key format
// ("whsec_" then base64) without ever quoting the key.
func validateWebhookSecret(v *validator, path string, s Secret) {
	if s.IsZero() {
		return
	}
	key := strings.TrimPrefix(s.Value(), "whsec_")
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) == 0 {
		v.errorf(path, "not a Standard Webhooks key: want \"whsec_\" followed by base64")
	}
}

// busRef is a reference to a bus of the referring document's tenant, at
// path (a "….bus.name" field) in that document.
type busRef struct {
	path, name string
}

// routesBusRefs appends the bus references of routes, found at path.
func routesBusRefs(refs []busRef, path string, routes []RouteSpec) []busRef {
	for i, r := range routes {
		if r.Bus != nil {
			refs = append(refs, busRef{path: indexPath(path, i) + ".bus.name", name: r.Bus.Name})
		}
	}
	return refs
}

// resultsBusRefs appends the bus references of result routes at path.
func resultsBusRefs(refs []busRef, path string, res *ResultsSpec) []busRef {
	refs = routesBusRefs(refs, path+".onSuccess", res.OnSuccess)
	return routesBusRefs(refs, path+".onFailure", res.OnFailure)
}

// checkReferences reports the problems no single document shows: a
// document of an undefined tenant (only when some Tenant document exists:
// single-tenant configurations need none), an API key shared by two
// tenants (never printed), and a bus route or target naming no Bus of the
// document's tenant. Paths already reported in a document are skipped.
func checkReferences(docs []loadedDoc) []*FieldError {
	tenants := make(map[string]bool)
	buses := make(map[string]bool) // by ID
	type keyUse struct {
		tenant string
		pos    Position
	}
	keys := make(map[string]keyUse) // by value
	var errs []*FieldError
	for _, ld := range docs {
		switch d := ld.doc.(type) {
		case *Bus:
			buses[d.ID()] = true
		case *Tenant:
			tenants[d.Metadata.Name] = true
			v := &validator{pos: ld.pos, bad: ld.bad}
			for i, k := range d.Spec.APIKeys {
				p := indexPath("spec.apiKeys", i)
				if k.Value() == "" || v.reported(p) {
					continue
				}
				first, dup := keys[k.Value()]
				if !dup {
					keys[k.Value()] = keyUse{tenant: d.Metadata.Name, pos: ld.pos.value(p)}
					continue
				}
				ref := ""
				if k.Ref != "" {
					ref = " " + k.Ref
				}
				v.errorf(p, "duplicate API key%s: same value as an API key of tenant %q at %s", ref, first.tenant, first.pos)
			}
			errs = append(errs, v.errs...)
		}
	}
	for _, ld := range docs {
		owner := ld.doc.tenant()
		if owner == "" {
			continue // a Tenant
		}
		v := &validator{pos: ld.pos, bad: ld.bad}
		switch {
		case len(tenants) == 0 || tenants[owner]:
		case ld.pos.has("metadata.tenant"):
			v.errorf("metadata.tenant", "unknown tenant %q: no Tenant document defines it", owner)
		default:
			v.missing("metadata.tenant", fmt.Sprintf("there are Tenant documents, none named %q", owner))
		}
		for _, r := range ld.doc.busRefs() {
			if r.name != "" && !buses[owner+"/"+r.name] {
				v.errorf(r.path, "unknown bus %q: tenant %q has no Bus of that name", r.name, owner)
			}
		}
		errs = append(errs, v.errs...)
	}
	return errs
}
