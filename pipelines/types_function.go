package pipelines

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// KindFunction is the kind of Function documents.
const KindFunction = "Function"

// Function defaults and limits.
const (
	DefaultMaxRequestBytes = 1 << 20 // 1MiB
	// MaxRequestBytesLimit bounds maxRequestBytes: a queued invocation is
	// one message, and queues refuse larger ones (NATS at most 64MB).
	MaxRequestBytesLimit = 32 << 20
	DefaultDedupWindow   = 24 * time.Hour
)

// Function is one `kind: Function` document: a CloudEvents HTTP endpoint
// invoked asynchronously through the invoke API
// (POST /v1/functions/{name}/invocations): each invocation is queued,
// delivered with retries and AIMD concurrency, tracked as a task, and its
// result routed.
type Function struct {
	// APIVersion must be "sluice.dev/v1".
	APIVersion string `yaml:"apiVersion" json:"apiVersion" jsonschema:"enum=sluice.dev/v1"`
	// Kind must be "Function".
	Kind string `yaml:"kind" json:"kind" jsonschema:"enum=Function"`
	// Metadata names the function (the {name} of the invoke API) and its
	// tenant; names are unique per tenant.
	Metadata Metadata `yaml:"metadata" json:"metadata"`
	// Spec is the endpoint and how invocations are delivered to it.
	Spec AsyncFunctionSpec `yaml:"spec" json:"spec"`

	// Pos is where the document starts (not part of the YAML).
	Pos Position `yaml:"-" json:"-"`
}

// ID identifies the function across tenants: "tenant/name".
func (f *Function) ID() string { return documentID(f.Metadata) }

// AsyncFunctionSpec is the body of a Function.
type AsyncFunctionSpec struct {
	// URL is the absolute http or https endpoint, without credentials.
	URL string `yaml:"url" json:"url" jsonschema:"format=uri"`
	// Mode is the CloudEvents HTTP content mode: binary or structured (an
	// invocation is one event, so there is no batch mode).
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty" jsonschema:"enum=binary,enum=structured"`
	// Timeout bounds one call, including reading the response.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// Headers are added to every call; values are secrets.
	Headers map[string]Secret `yaml:"headers,omitempty" json:"headers,omitempty"`
	// Delivery is the concurrency and retry policy.
	Delivery AsyncDeliverySpec `yaml:"delivery,omitempty" json:"delivery,omitempty"`
	// Results routes function results and dead letters.
	Results ResultsSpec `yaml:"results,omitempty" json:"results,omitempty"`
	// MaxRequestBytes bounds an invocation's body: larger requests are
	// refused with 413. Bytes, or a size such as "512KiB" or "4MB"; at most
	// 32MiB, and the queue must accept messages this large.
	MaxRequestBytes ByteSize `yaml:"maxRequestBytes,omitempty" json:"maxRequestBytes,omitempty"`
	// DedupWindow is how long an Idempotency-Key (or, without one, a
	// CloudEvent's source and id) is remembered: a repeat within it returns
	// the first task instead of queuing again.
	DedupWindow Duration `yaml:"dedupWindow,omitempty" json:"dedupWindow,omitempty"`
}

// Endpoint returns the function's endpoint settings as a pipeline's
// function, for the function client.
func (s *AsyncFunctionSpec) Endpoint() FunctionSpec {
	return FunctionSpec{URL: s.URL, Mode: s.Mode, Timeout: s.Timeout, Headers: s.Headers}
}

// AsyncDeliverySpec is the delivery policy of events that have no order to
// keep (invocations, bus targets): a pipeline's delivery without ordering
// and window.
type AsyncDeliverySpec struct {
	// Concurrency bounds in-flight calls to the function (AIMD).
	Concurrency ConcurrencySpec `yaml:"concurrency,omitempty" json:"concurrency,omitempty"`
	// Retry is the retry policy for retriable failures.
	Retry RetrySpec `yaml:"retry,omitempty" json:"retry,omitempty"`
	// MaxEventAge sends events older than this to onFailure instead of
	// retrying them again.
	MaxEventAge Duration `yaml:"maxEventAge,omitempty" json:"maxEventAge,omitempty"`
}

func (f *Function) setPos(pos Position) { f.Pos = pos }
func (f *Function) addTo(cfg *Config)   { cfg.Functions = append(cfg.Functions, f) }
func (f *Function) tenant() string      { return f.Metadata.Tenant }

func (f *Function) id() string {
	if f.Metadata.Name == "" {
		return ""
	}
	return f.ID()
}

func (f *Function) resolveFiles(dir string) {
	resolveTLSFiles(dir, routesTLS(f.Spec.Results.OnSuccess, f.Spec.Results.OnFailure)...)
}

func (f *Function) busRefs() []busRef {
	return resultsBusRefs(nil, "spec.results", &f.Spec.Results)
}

func (f *Function) applyDefaults() {
	setDefault(&f.APIVersion, APIVersion)
	setDefault(&f.Kind, KindFunction)
	setDefault(&f.Metadata.Tenant, DefaultTenant)
	s := &f.Spec
	setDefault(&s.Mode, DefaultMode)
	setDefault(&s.Timeout, Duration(DefaultFunctionTimeout))
	asyncDeliveryDefaults(&s.Delivery)
	resultsDefaults(&s.Results, &SourceSpec{})
	setDefault(&s.MaxRequestBytes, DefaultMaxRequestBytes)
	setDefault(&s.DedupWindow, Duration(DefaultDedupWindow))
}

func asyncDeliveryDefaults(d *AsyncDeliverySpec) {
	concurrencyDefaults(&d.Concurrency)
	retryDefaults(&d.Retry)
	setDefault(&d.MaxEventAge, Duration(DefaultMaxEventAge))
}

func (f *Function) validate(v *validator) {
	validateMetadata(v, &f.Metadata)
	s := &f.Spec
	endpoint := s.Endpoint()
	validateFunction(v, "spec", &endpoint, false)
	validateAsyncDelivery(v, "spec.delivery", &s.Delivery)
	validateResults(v, "spec.results", &s.Results, nil)
	switch {
	case s.MaxRequestBytes < 1:
		v.errorf("spec.maxRequestBytes", "must be at least 1 byte")
	case s.MaxRequestBytes > MaxRequestBytesLimit:
		v.errorf("spec.maxRequestBytes", "%s is above the limit of %s", s.MaxRequestBytes, ByteSize(MaxRequestBytesLimit))
	}
	v.positive("spec.dedupWindow", s.DedupWindow)
}

func validateAsyncDelivery(v *validator, path string, d *AsyncDeliverySpec) {
	validateConcurrency(v, path+".concurrency", &d.Concurrency)
	validateRetry(v, path+".retry", &d.Retry)
	v.positive(path+".maxEventAge", d.MaxEventAge)
}

// ByteSize is a size in bytes, written as an integer (bytes) or a string
// with a unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of
// 1024), e.g. "512KiB".
type ByteSize int64

// byteSizeRE is the string form of a ByteSize.
var byteSizeRE = regexp.MustCompile(`^([0-9]+) ?(B|KB|MB|GB|KiB|MiB|GiB)?$`)

var byteUnits = map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

// ParseByteSize parses the string form of a ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	m := byteSizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("invalid size %q: want bytes or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"1MiB\"", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	unit := byteUnits[m[2]]
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	return ByteSize(n * unit), nil
}

// String formats b with the largest unit dividing it exactly: "1MiB",
// "2GB", "1536KiB", "100B".
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		size ByteSize
	}{{"GiB", 1 << 30}, {"GB", 1e9}, {"MiB", 1 << 20}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if b != 0 && b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// MarshalText writes b as String does, so JSON and YAML output round-trips.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText parses the string form.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}
