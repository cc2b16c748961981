// Package kafkaload holds the Kafka side of the benchmarks: the synthetic
// event set, topic setup and pre-production, and the two Kafka baselines
// (raw-consume and naive-bridge). Everything here runs inside the bench
// process.
package kafkaload

import (
	"strconv"
	"strings"
)

// Events is a deterministic synthetic event set, so that Kafka records and
// the raw-http load generator carry the same events. Event i has
//
//	id             e-<i>
//	source         /sluice/bench
//	type           dev.sluice.bench.event
//	partitionkey   k-<i mod Keys>        (also the Kafka record key)
//	data           {"id":"e-<i>","key":"k-<i mod Keys>","seq":<i div Keys>,"pad":"xx…"}
//
// with data padded to Size bytes (application/json). Key k's events carry
// seq 0, 1, 2… in order, which the example function's -check-order checks.
type Events struct {
	N    int // how many
	Size int // bytes of data per event
	Keys int // distinct keys, at least 1
	// MaxBatchBytes bounds the record batches Produce writes (sarama's
	// Producer.MaxMessageBytes; 0: sarama's default, 1 MiB). Unbounded,
	// batch sizes follow the broker's pace (50–960 KiB in one topic), and
	// a consumer's fetch holds at least one whole batch per partition: a
	// benchmark comparing the memory of two topics bounds them.
	MaxBatchBytes int
}

// CloudEvents attributes shared by every event.
const (
	Source      = "/sluice/bench"
	Type        = "dev.sluice.bench.event"
	ContentType = "application/json"
)

// ID is event i's id.
func (e Events) ID(i int) string { return "e-" + strconv.Itoa(i) }

// KeyIndex is the index of event i's key.
func (e Events) KeyIndex(i int) int { return i % max(e.Keys, 1) }

// Key is event i's partition key.
func (e Events) Key(i int) string { return "k-" + strconv.Itoa(e.KeyIndex(i)) }

// Data is event i's JSON payload, Size bytes long (longer only if Size is
// too small for the fields).
func (e Events) Data(i int) []byte {
	var b strings.Builder
	b.Grow(e.Size)
	b.WriteString(`{"id":"`)
	b.WriteString(e.ID(i))
	b.WriteString(`","key":"`)
	b.WriteString(e.Key(i))
	b.WriteString(`","seq":`)
	b.WriteString(strconv.Itoa(i / max(e.Keys, 1)))
	b.WriteString(`,"pad":"`)
	if pad := e.Size - b.Len() - 2; pad > 0 {
		b.WriteString(strings.Repeat("x", pad))
	}
	b.WriteString(`"}`)
	return []byte(b.String())
}
