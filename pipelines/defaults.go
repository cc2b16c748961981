package pipelines

import "time"

// Enumerated values not covered by the mode and ordering constants.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"

	BackoffExponential = "exponential"
	BackoffConstant    = "constant"

	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"

	LogFormatJSON = "json"
	LogFormatText = "text"
)

// Defaults, applied by ApplyDefaults to fields left empty (zero). They are
// listed in docs/reference.md, which is generated from what ApplyDefaults
// does, so the two cannot disagree.
const (
	DefaultTenant             = "default"
	DefaultKafkaStart         = StartEarliest
	DefaultEventType          = "dev.sluice.kafka.message"
	DefaultClientID           = "sluice"
	DefaultMode               = ModeBinary
	DefaultFunctionTimeout    = 30 * time.Second
	DefaultBatchMaxEvents     = 100
	DefaultBatchLinger        = 10 * time.Millisecond
	DefaultOrdering           = OrderingPartition // safe: one in flight per partition
	DefaultConcurrencyInitial = 8
	DefaultConcurrencyMin     = 1
	DefaultConcurrencyMax     = 256
	DefaultConcurrencyBackoff = 0.7
	DefaultWindow             = 1024
	DefaultAttempts           = 5
	DefaultBackoff            = BackoffExponential
	DefaultDelay              = 200 * time.Millisecond
	DefaultMaxDelay           = 30 * time.Second
	DefaultRetryAfterMax      = 60 * time.Second
	DefaultMaxEventAge        = 24 * time.Hour
	DefaultSinkKey            = "partitionkey"
	DefaultWebhookTimeout     = 10 * time.Second
	DefaultLogFormat          = LogFormatJSON
)

// ApplyDefaults fills every field left at its zero value with its default.
// It is idempotent, and leaves invalid values for Validate to report. A Kafka
// sink without brokers takes the Kafka source's brokers and, where it sets
// none of its own, the source's tls, sasl, version and clientID (shared, not
// copied: do not modify them).
func ApplyDefaults(p *Pipeline) {
	if p.APIVersion == "" {
		p.APIVersion = APIVersion
	}
	if p.Kind == "" {
		p.Kind = KindPipeline
	}
	setDefault(&p.Metadata.Tenant, DefaultTenant)

	s := &p.Spec
	src := s.Source.Kafka
	if src != nil {
		setDefault(&src.Start, DefaultKafkaStart)
		setDefault(&src.EventType, DefaultEventType)
		setDefault(&src.ClientID, DefaultClientID)
	}

	if r := s.Source.RabbitMQ; r != nil {
		rabbitMQSourceDefaults(r)
	}
	if r := s.Source.RocketMQ; r != nil {
		rocketMQSourceDefaults(r)
	}

	if f := s.Function; f != nil {
		functionDefaults(f)
	}

	d := &s.Delivery
	setDefault(&d.Ordering, DefaultOrdering)
	concurrencyDefaults(&d.Concurrency)
	setDefault(&d.Window, DefaultWindow)
	retryDefaults(&d.Retry)
	setDefault(&d.MaxEventAge, Duration(DefaultMaxEventAge))
	resultsDefaults(&s.Results, &s.Source)
}

func functionDefaults(f *FunctionSpec) {
	setDefault(&f.Mode, DefaultMode)
	setDefault(&f.Timeout, Duration(DefaultFunctionTimeout))
	if f.Mode == ModeBatch {
		if f.Batch == nil {
			f.Batch = &BatchSpec{}
		}
		setDefault(&f.Batch.MaxEvents, DefaultBatchMaxEvents)
		setDefault(&f.Batch.Linger, Duration(DefaultBatchLinger))
	}
}

func concurrencyDefaults(c *ConcurrencySpec) {
	setDefault(&c.Min, DefaultConcurrencyMin)
	// A bound given alone must not clash with the other defaults: max:4
	// means initial 4, min:300 means max 300.
	setDefault(&c.Max, max(DefaultConcurrencyMax, c.Min, c.Initial))
	setDefault(&c.Initial, min(max(DefaultConcurrencyInitial, c.Min), c.Max))
	setDefault(&c.Backoff, DefaultConcurrencyBackoff)
}

func retryDefaults(r *RetrySpec) {
	setDefault(&r.Attempts, DefaultAttempts)
	setDefault(&r.Backoff, DefaultBackoff)
	setDefault(&r.Delay, Duration(DefaultDelay))
	setDefault(&r.MaxDelay, max(Duration(DefaultMaxDelay), r.Delay))
	setDefault(&r.RetryAfterMax, Duration(DefaultRetryAfterMax))
}

// resultsDefaults fills result routes; sinks may take settings from src
// (an empty SourceSpec where there is no source).
func resultsDefaults(res *ResultsSpec, src *SourceSpec) {
	routesDefaults(res.OnSuccess, src)
	routesDefaults(res.OnFailure, src)
}

func routesDefaults(routes []RouteSpec, src *SourceSpec) {
	for i := range routes {
		routeDefaults(&routes[i], src)
	}
}

func routeDefaults(r *RouteSpec, source *SourceSpec) {
	if r.RabbitMQ != nil {
		rabbitMQSinkDefaults(r.RabbitMQ)
	}
	if r.RocketMQ != nil {
		rocketMQSinkDefaults(r.RocketMQ, source)
	}
	src := source.Kafka
	if k := r.Kafka; k != nil {
		if len(k.Brokers) == 0 && src != nil {
			k.Brokers = append([]string(nil), src.Brokers...)
			if k.TLS == nil {
				k.TLS = src.TLS
			}
			if k.SASL == nil {
				k.SASL = src.SASL
			}
			setDefault(&k.Version, src.Version)
			setDefault(&k.ClientID, src.ClientID)
		}
		setDefault(&k.ClientID, DefaultClientID)
		setDefault(&k.Key, DefaultSinkKey)
	}
	if w := r.Webhook; w != nil {
		setDefault(&w.Timeout, Duration(DefaultWebhookTimeout))
	}
	if l := r.Log; l != nil {
		setDefault(&l.Format, DefaultLogFormat)
	}
}

// setDefault sets *field to def if it is zero.
func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}
