package rocketmq

import "time"

// Recorder receives the source's connection state. Implementations must be
// safe for concurrent use and must not block. The runtime's metrics package
// provides the Prometheus implementation; nil disables recording.
type Recorder interface {
	// Connected reports changes: true once the topic's route and brokers
	// answer, false when they stop answering.
	Connected(connected bool)
}

// Option adjusts a Source beyond what the pipeline spec says.
type Option func(*settings)

type settings struct {
	recorder     Recorder
	pollInterval time.Duration
	probeEvery   time.Duration
	assignWait   time.Duration
	catchUpWait  time.Duration
}

func defaultSettings() settings {
	return settings{
		pollInterval: time.Second,
		probeEvery:   5 * time.Second,
		assignWait:   10 * time.Second,
		catchUpWait:  3 * time.Second,
	}
}

// WithRecorder sets the metrics recorder (nil: none).
func WithRecorder(r Recorder) Option { return func(s *settings) { s.recorder = r } }

// WithPollInterval sets how often the source asks the client which queues
// it still owns, to revoke the lanes of queues rebalanced away (default
// 1 s).
func WithPollInterval(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.pollInterval = d
		}
	}
}

// WithProbeInterval sets how often the health probe asks a name server for
// the topic's route and dials its brokers (default 5 s).
func WithProbeInterval(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.probeEvery = d
		}
	}
}

// WithAssignWait bounds how long Connect waits for the group to assign this
// consumer a queue of the topic (default 10 s). A consumer of a group with
// more members than queues gets none; Connect then returns anyway.
func WithAssignWait(d time.Duration) Option {
	return func(s *settings) {
		if d > 0 {
			s.assignWait = d
		}
	}
}

// recorder wraps an optional Recorder.
type recorder struct{ r Recorder }

func (r recorder) connected(ok bool) {
	if r.r != nil {
		r.r.Connected(ok)
	}
}
