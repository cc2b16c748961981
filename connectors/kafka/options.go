package kafka

import (
	"time"

	"github.com/IBM/sarama"
)

// Recorder receives the source's operational signals. Implementations must be
// safe for concurrent use and must not block: they are called from the
// consume loop and from per-partition goroutines. The runtime's metrics
// package provides the Prometheus implementation; nil disables recording.
type Recorder interface {
	// PartitionLag reports, about once per commit interval for every owned
	// partition, its high-water mark minus the position this consumer last
	// committed (or marked for commit).
	PartitionLag(topic string, partition int32, lag int64)
	// PartitionReleased reports that the partition is no longer owned
	// (revoked or closed): stop exporting its lag.
	PartitionReleased(topic string, partition int32)
	// Connected reports connection state changes: true once a consumer group
	// session is established, false when the broker is unreachable.
	Connected(connected bool)
}

// Option adjusts a Source beyond what the pipeline spec says.
type Option func(*settings)

type settings struct {
	recorder       Recorder
	commitInterval time.Duration
	revokeGrace    time.Duration
	tune           func(*sarama.Config)
}

func defaultSettings() settings {
	return settings{commitInterval: time.Second, revokeGrace: 10 * time.Second}
}

// WithRecorder sets the metrics recorder (nil: none).
func WithRecorder(r Recorder) Option { return func(s *settings) { s.recorder = r } }

// WithCommitInterval sets how often acknowledged positions are committed
// (default 1 s). Positions are also committed on revoke and on Close.
func WithCommitInterval(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.commitInterval = d
		}
	}
}

// WithRevokeGrace bounds how long a revoked partition waits for outstanding
// acknowledgements before committing what it has and letting the partition
// go (default 10 s). It is capped at 3/4 of Consumer.Group.Rebalance.Timeout:
// a longer drain would get this member evicted and its final commit refused.
func WithRevokeGrace(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.revokeGrace = d
		}
	}
}

// WithSaramaConfig lets the caller adjust the sarama configuration after the
// source has built it (timeouts, balance strategy, ...). Settings the source
// relies on — manual commit, Return.Errors — are re-applied afterwards.
func WithSaramaConfig(tune func(*sarama.Config)) Option {
	return func(s *settings) { s.tune = tune }
}

// recorder wraps an optional Recorder.
type recorder struct{ r Recorder }

func (r recorder) lag(topic string, partition int32, lag int64) {
	if r.r != nil {
		r.r.PartitionLag(topic, partition, lag)
	}
}

func (r recorder) released(topic string, partition int32) {
	if r.r != nil {
		r.r.PartitionReleased(topic, partition)
	}
}

func (r recorder) connected(ok bool) {
	if r.r != nil {
		r.r.Connected(ok)
	}
}
