package pipelines

import (
	"fmt"
	"strings"
	"time"
)

// APIVersion is the only accepted apiVersion.
const APIVersion = "sluice.dev/v1"

// Document kinds.
const (
	KindPipeline = "Pipeline"
)

// Position locates a node in a configuration file. Line and Column are
// 1-based; zero means unknown (a Pipeline built in code).
type Position struct {
	File   string
	Line   int
	Column int
}

// String formats p as "file:line:col", leaving out unknown parts.
func (p Position) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.File == "":
		return fmt.Sprintf("%d:%d", p.Line, p.Column)
	default:
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
	}
}

// Config is everything loaded from a set of files, one slice per document
// kind, each in file order.
type Config struct {
	Pipelines []*Pipeline
	Tenants   []*Tenant
	Functions []*Function
	Buses     []*Bus
}

// Pipeline is one `kind: Pipeline` document: one source → (filter) → one
// function → result routes.
type Pipeline struct {
	// APIVersion must be "sluice.dev/v1".
	APIVersion string `yaml:"apiVersion" json:"apiVersion" jsonschema:"enum=sluice.dev/v1"`
	// Kind must be "Pipeline".
	Kind string `yaml:"kind" json:"kind" jsonschema:"enum=Pipeline"`
	// Metadata names the pipeline and its tenant.
	Metadata Metadata `yaml:"metadata" json:"metadata"`
	// Spec is what the pipeline does.
	Spec PipelineSpec `yaml:"spec" json:"spec"`

	// Pos is where the document starts (not part of the YAML).
	Pos Position `yaml:"-" json:"-"`
}

// ID identifies the pipeline across tenants: "tenant/name".
func (p *Pipeline) ID() string { return documentID(p.Metadata) }

// Metadata names a document and its owner.
type Metadata struct {
	// Name is unique per tenant: a DNS label (lower-case letters, digits and
	// '-', at most 63 characters).
	Name string `yaml:"name" json:"name"`
	// Tenant owns the document; same syntax as name.
	Tenant string `yaml:"tenant,omitempty" json:"tenant,omitempty"`
	// Labels are free-form key/value pairs for selecting pipelines.
	Labels map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
}

// PipelineSpec is the body of a Pipeline.
type PipelineSpec struct {
	// Source is where events come from.
	Source SourceSpec `yaml:"source" json:"source"`
	// Filter drops events that do not match before the function is called.
	Filter *FilterSpec `yaml:"filter,omitempty" json:"filter,omitempty"`
	// Function is called once per event (or per batch). Without one, each
	// source event is itself the result and goes to results.onSuccess
	// (then required), e.g. to feed a bus straight from a topic.
	Function *FunctionSpec `yaml:"function,omitempty" json:"function,omitempty"`
	// Delivery is the ordering, concurrency and retry policy.
	Delivery DeliverySpec `yaml:"delivery,omitempty" json:"delivery,omitempty"`
	// Results routes function results and dead letters.
	Results ResultsSpec `yaml:"results,omitempty" json:"results,omitempty"`
}

// SourceSpec holds exactly one source.
type SourceSpec struct {
	// Kafka consumes Kafka topics with a consumer group.
	Kafka *KafkaSource `yaml:"kafka,omitempty" json:"kafka,omitempty"`
	// RabbitMQ consumes a RabbitMQ queue.
	RabbitMQ *RabbitMQSource `yaml:"rabbitmq,omitempty" json:"rabbitmq,omitempty"`
	// RocketMQ consumes a RocketMQ topic with a consumer group.
	RocketMQ *RocketMQSource `yaml:"rocketmq,omitempty" json:"rocketmq,omitempty"`
}

// KafkaSource consumes topics with a consumer group.
type KafkaSource struct {
	// Brokers are the bootstrap brokers, "host:port".
	Brokers []string `yaml:"brokers" json:"brokers" jsonschema:"minItems=1"`
	// Topics are consumed together by one consumer group.
	Topics []string `yaml:"topics" json:"topics" jsonschema:"minItems=1"`
	// Group is the Kafka consumer group; instances sharing it share the partitions.
	Group string `yaml:"group" json:"group"`
	// Start is where a group without committed offsets starts: earliest or latest.
	Start string `yaml:"start,omitempty" json:"start,omitempty" jsonschema:"enum=earliest,enum=latest"`
	// ClientID is the Kafka client id.
	ClientID string `yaml:"clientID,omitempty" json:"clientID,omitempty"`
	// Version is the Kafka protocol version to speak (sarama's), e.g. "3.6.0".
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// EventType is the CloudEvents type given to messages that are not
	// already CloudEvents.
	EventType string `yaml:"eventType,omitempty" json:"eventType,omitempty"`
	// TLS secures the broker connections.
	TLS *TLSSpec `yaml:"tls,omitempty" json:"tls,omitempty"`
	// SASL authenticates to the brokers.
	SASL *SASLSpec `yaml:"sasl,omitempty" json:"sasl,omitempty"`
}

// TLSSpec configures TLS to a broker. Relative file paths are resolved
// against the directory of the YAML file.
type TLSSpec struct {
	// Enabled turns TLS on; the other fields require it.
	Enabled bool `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string `yaml:"caFile,omitempty" json:"caFile,omitempty"`
	// CertFile is a PEM client certificate (mutual TLS); needs keyFile.
	CertFile string `yaml:"certFile,omitempty" json:"certFile,omitempty"`
	// KeyFile is the PEM key of certFile.
	KeyFile string `yaml:"keyFile,omitempty" json:"keyFile,omitempty"`
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string `yaml:"serverName,omitempty" json:"serverName,omitempty"`
	// InsecureSkipVerify disables certificate checks. For tests only.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify,omitempty" json:"insecureSkipVerify,omitempty"`
}

// SASLSpec configures SASL authentication.
type SASLSpec struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string `yaml:"mechanism" json:"mechanism" jsonschema:"enum=PLAIN,enum=SCRAM-SHA-256,enum=SCRAM-SHA-512"`
	// Username is the SASL user.
	Username string `yaml:"username" json:"username"`
	// Password is a secret reference.
	Password Secret `yaml:"password" json:"password"`
}

// FilterSpec is a CloudEvents Subscriptions API filter. Exactly one dialect
// is set. Attribute names are CloudEvents attribute or extension names.
type FilterSpec struct {
	// Exact matches when every attribute equals its value.
	Exact map[string]string `yaml:"exact,omitempty" json:"exact,omitempty"`
	// Prefix matches when every attribute starts with its value.
	Prefix map[string]string `yaml:"prefix,omitempty" json:"prefix,omitempty"`
	// Suffix matches when every attribute ends with its value.
	Suffix map[string]string `yaml:"suffix,omitempty" json:"suffix,omitempty"`
	// All matches when every nested filter matches.
	All []FilterSpec `yaml:"all,omitempty" json:"all,omitempty"`
	// Any matches when at least one nested filter matches.
	Any []FilterSpec `yaml:"any,omitempty" json:"any,omitempty"`
	// Not matches when the nested filter does not.
	Not *FilterSpec `yaml:"not,omitempty" json:"not,omitempty"`
	// SQL is a CloudEvents SQL (CESQL) expression.
	SQL string `yaml:"sql,omitempty" json:"sql,omitempty"`
}

// Function modes.
const (
	ModeBinary     = "binary"
	ModeStructured = "structured"
	ModeBatch      = "batch"
)

// FunctionSpec is the CloudEvents HTTP endpoint that processes events.
type FunctionSpec struct {
	// URL is the absolute http or https endpoint, without credentials.
	URL string `yaml:"url" json:"url" jsonschema:"format=uri"`
	// Mode is the CloudEvents HTTP content mode: binary, structured, or
	// batch (application/cloudevents-batch+json).
	Mode string `yaml:"mode,omitempty" json:"mode,omitempty" jsonschema:"enum=binary,enum=structured,enum=batch"`
	// Timeout bounds one call, including reading the response.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// Headers are added to every call; values are secrets.
	Headers map[string]Secret `yaml:"headers,omitempty" json:"headers,omitempty"`
	// Batch configures batch mode; only allowed with mode batch.
	Batch *BatchSpec `yaml:"batch,omitempty" json:"batch,omitempty"`
}

// BatchSpec configures batch mode. Its defaults apply only when the
// function's mode is batch.
type BatchSpec struct {
	// MaxEvents is the most events in one call.
	MaxEvents int `yaml:"maxEvents,omitempty" json:"maxEvents,omitempty" jsonschema:"minimum=0"`
	// Linger is how long to wait for a batch to fill before calling.
	Linger Duration `yaml:"linger,omitempty" json:"linger,omitempty"`
}

// Ordering modes.
const (
	OrderingKey       = "key"
	OrderingPartition = "partition"
	OrderingNone      = "none"
)

// DeliverySpec is the delivery policy.
type DeliverySpec struct {
	// Ordering is what stays in order: key (one in flight per key),
	// partition (one in flight per partition) or none.
	Ordering string `yaml:"ordering,omitempty" json:"ordering,omitempty" jsonschema:"enum=key,enum=partition,enum=none"`
	// Concurrency bounds in-flight calls to the function (AIMD).
	Concurrency ConcurrencySpec `yaml:"concurrency,omitempty" json:"concurrency,omitempty"`
	// Retry is the retry policy for retriable failures.
	Retry RetrySpec `yaml:"retry,omitempty" json:"retry,omitempty"`
	// MaxEventAge sends events older than this to onFailure instead of
	// retrying them again.
	MaxEventAge Duration `yaml:"maxEventAge,omitempty" json:"maxEventAge,omitempty"`
	// Window bounds read-but-unacknowledged messages per lane: the most a
	// crash re-delivers per partition.
	Window int `yaml:"window,omitempty" json:"window,omitempty" jsonschema:"minimum=0"`
}

// ConcurrencySpec bounds in-flight invocations (AIMD bounds).
type ConcurrencySpec struct {
	// Initial is the starting limit, clamped to [min, max] when defaulted. From it the limit doubles per window of calls that used it up, until the function first refuses or calls start to queue; then it grows by one per window.
	Initial int `yaml:"initial,omitempty" json:"initial,omitempty" jsonschema:"minimum=0"`
	// Min is the lowest the limit is cut to; at least 1.
	Min int `yaml:"min,omitempty" json:"min,omitempty" jsonschema:"minimum=0"`
	// Max is the highest the limit grows to; when defaulted, at least min and initial.
	Max int `yaml:"max,omitempty" json:"max,omitempty" jsonschema:"minimum=0"`
	// Backoff bounds the decrease on overload (429, 503, 504, timeouts, refused connections). The first overload after the limit grew cuts it to just below the calls that fitted, but never below the limit times backoff; an overload that persists after a cut multiplies the limit by it. At most one cut per window. Between 0.5 and 0.9; default 0.7.
	Backoff float64 `yaml:"backoff,omitempty" json:"backoff,omitempty" jsonschema:"minimum=0"`
	// LatencyThreshold, when set, treats a successful call slower than it as overload, for targets that slow down instead of refusing. Off by default.
	LatencyThreshold Duration `yaml:"latencyThreshold,omitempty" json:"latencyThreshold,omitempty"`
}

// RetrySpec is the retry policy.
type RetrySpec struct {
	// Attempts counts every call including the first; 1 means never retry.
	Attempts int `yaml:"attempts,omitempty" json:"attempts,omitempty" jsonschema:"minimum=0"`
	// Backoff is exponential (delay doubling up to maxDelay, with jitter) or constant.
	Backoff string `yaml:"backoff,omitempty" json:"backoff,omitempty" jsonschema:"enum=exponential,enum=constant"`
	// Delay is the wait before the first retry.
	Delay Duration `yaml:"delay,omitempty" json:"delay,omitempty"`
	// MaxDelay caps the wait between retries; when defaulted, at least delay.
	MaxDelay Duration `yaml:"maxDelay,omitempty" json:"maxDelay,omitempty"`
	// RetryAfterMax caps how long a Retry-After response header may delay a retry.
	RetryAfterMax Duration `yaml:"retryAfterMax,omitempty" json:"retryAfterMax,omitempty"`
}

// ResultsSpec lists result routes. Every route of a list must confirm a
// durable write before the source message is acknowledged.
type ResultsSpec struct {
	// OnSuccess receives the function's result events.
	OnSuccess []RouteSpec `yaml:"onSuccess,omitempty" json:"onSuccess,omitempty"`
	// OnFailure receives events that failed permanently or ran out of
	// attempts (dead letters), with error extensions.
	OnFailure []RouteSpec `yaml:"onFailure,omitempty" json:"onFailure,omitempty"`
}

// RouteSpec holds exactly one sink.
type RouteSpec struct {
	// Kafka produces to a Kafka topic.
	Kafka *KafkaSink `yaml:"kafka,omitempty" json:"kafka,omitempty"`
	// Webhook POSTs to an HTTP endpoint.
	Webhook *WebhookSink `yaml:"webhook,omitempty" json:"webhook,omitempty"`
	// Log writes to standard output.
	Log *LogSink `yaml:"log,omitempty" json:"log,omitempty"`
	// RabbitMQ publishes to a RabbitMQ exchange with publisher confirms.
	RabbitMQ *RabbitMQSink `yaml:"rabbitmq,omitempty" json:"rabbitmq,omitempty"`
	// RocketMQ sends to a RocketMQ topic.
	RocketMQ *RocketMQSink `yaml:"rocketmq,omitempty" json:"rocketmq,omitempty"`
	// Bus puts events on a Bus of the same tenant, written {bus: {name: orders}}.
	Bus *BusRoute `yaml:"bus,omitempty" json:"bus,omitempty"`
}

// KafkaSink produces events to a topic (Kafka binary content mode). When
// brokers are not given, the brokers and the connection settings (tls,
// sasl, version, clientID) not given are taken from the Kafka source.
type KafkaSink struct {
	// Brokers defaults to the Kafka source's brokers.
	Brokers []string `yaml:"brokers,omitempty" json:"brokers,omitempty"`
	// Topic is the topic produced to.
	Topic string `yaml:"topic" json:"topic"`
	// Key names the CloudEvents attribute or extension used as the message
	// key; events without it are produced without a key.
	Key string `yaml:"key,omitempty" json:"key,omitempty"`
	// ClientID is the Kafka client id.
	ClientID string `yaml:"clientID,omitempty" json:"clientID,omitempty"`
	// Version is the Kafka protocol version to speak, e.g. "3.6.0".
	Version string `yaml:"version,omitempty" json:"version,omitempty"`
	// TLS secures the broker connections.
	TLS *TLSSpec `yaml:"tls,omitempty" json:"tls,omitempty"`
	// SASL authenticates to the brokers.
	SASL *SASLSpec `yaml:"sasl,omitempty" json:"sasl,omitempty"`
}

// WebhookSink POSTs each event (structured mode) to a URL.
type WebhookSink struct {
	// URL is the absolute http or https endpoint, without credentials.
	URL string `yaml:"url" json:"url" jsonschema:"format=uri"`
	// Secret signs requests per the Standard Webhooks spec ("whsec_..." base64).
	Secret Secret `yaml:"secret,omitempty" json:"secret,omitempty"`
	// Headers are added to every request; values are secrets.
	Headers map[string]Secret `yaml:"headers,omitempty" json:"headers,omitempty"`
	// Timeout bounds one request.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// LogSink writes events to standard output, for demos.
type LogSink struct {
	// Format is json (one event per line) or text.
	Format string `yaml:"format,omitempty" json:"format,omitempty" jsonschema:"enum=json,enum=text"`
}

// Duration is a time.Duration written as a Go duration string ("200ms",
// "1h30m"). Negative durations are rejected; zero means the default.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration does, without zero trailing units:
// "200ms", "1m" (not "1m0s"), "1h30m".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalText writes d as a Go duration string, so JSON and YAML output
// round-trips.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Secret is a resolved secret value. In YAML it is written as a reference
// (${env:NAME} or ${file:PATH}) or, discouraged, a literal. It never prints
// its value: see secret.go for the formatting and marshalling methods.
type Secret struct {
	Ref string // the reference as written, for error messages; "" for a literal
	// value is behind a pointer because fmt, when it meets a bad verb
	// ("%s" of a struct holding pointers), prints nested values raw without
	// calling their Format method, and it prints nested pointers as
	// addresses only.
	value *string
}

// NewSecret returns a Secret holding value (for code and tests).
func NewSecret(ref, value string) Secret { return Secret{Ref: ref, value: &value} }

// Value returns the secret in clear. Never log it.
func (s Secret) Value() string {
	if s.value == nil {
		return ""
	}
	return *s.value
}

// IsZero reports whether no secret was given.
func (s Secret) IsZero() bool { return s.Ref == "" && s.Value() == "" }

// String redacts the secret.
func (s Secret) String() string {
	if s.IsZero() {
		return ""
	}
	return "[redacted]"
}
