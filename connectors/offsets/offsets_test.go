package offsets

import (
	"errors"
	"math/rand/v2"
	"testing"
)

type step struct {
	op     string // "d" deliver, "a" ack, "n" nack, "r" retract
	offset int64
}

func TestOffsetTracker(t *testing.T) {
	tests := []struct {
		name        string
		steps       []step
		wantNext    int64
		wantOK      bool
		uncommitted int
		pending     int
	}{
		{name: "nothing delivered", wantOK: false},
		{
			name:        "delivered, none acked",
			steps:       []step{{"d", 0}, {"d", 1}},
			uncommitted: 2, pending: 2,
		},
		{
			name:     "in order",
			steps:    []step{{"d", 0}, {"d", 1}, {"d", 2}, {"a", 0}, {"a", 1}, {"a", 2}},
			wantNext: 3, wantOK: true,
		},
		{
			name:     "out of order completes the prefix",
			steps:    []step{{"d", 0}, {"d", 1}, {"d", 2}, {"a", 2}, {"a", 1}, {"a", 0}},
			wantNext: 3, wantOK: true,
		},
		{
			name: "hole stops the prefix",
			steps: []step{
				{"d", 0}, {"d", 1}, {"d", 2}, {"d", 3}, {"d", 4},
				{"a", 0}, {"a", 1}, {"a", 3}, {"a", 4},
			},
			wantNext: 2, wantOK: true, uncommitted: 3, pending: 1,
		},
		{
			name:        "first offset not acked",
			steps:       []step{{"d", 10}, {"d", 11}, {"a", 11}},
			uncommitted: 2, pending: 1,
		},
		{
			name: "gaps from compaction: successor is the next delivered offset",
			steps: []step{
				{"d", 5}, {"d", 9}, {"d", 20}, {"a", 9}, {"a", 5},
			},
			wantNext: 10, wantOK: true, uncommitted: 1, pending: 1,
		},
		{
			name: "gaps, all acked",
			steps: []step{
				{"d", 5}, {"d", 9}, {"d", 20}, {"a", 20}, {"a", 9}, {"a", 5},
			},
			wantNext: 21, wantOK: true,
		},
		{
			name: "nack pins the position",
			steps: []step{
				{"d", 0}, {"d", 1}, {"d", 2}, {"a", 0}, {"n", 1}, {"a", 2},
			},
			wantNext: 1, wantOK: true, uncommitted: 2, pending: 0,
		},
		{
			name:     "retract the last delivery",
			steps:    []step{{"d", 0}, {"d", 1}, {"a", 0}, {"r", 1}, {"d", 1}, {"a", 1}},
			wantNext: 2, wantOK: true,
		},
		{
			name:     "retract after the prefix moved",
			steps:    []step{{"d", 0}, {"a", 0}, {"d", 1}, {"r", 1}, {"d", 1}, {"a", 1}},
			wantNext: 2, wantOK: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tr Tracker
			apply(t, &tr, tc.steps)
			next, ok := tr.Committable()
			if ok != tc.wantOK || (ok && next != tc.wantNext) {
				t.Errorf("Committable() = %d, %v; want %d, %v", next, ok, tc.wantNext, tc.wantOK)
			}
			if got := tr.Uncommitted(); got != tc.uncommitted {
				t.Errorf("Uncommitted() = %d, want %d", got, tc.uncommitted)
			}
			if got := tr.Pending(); got != tc.pending {
				t.Errorf("Pending() = %d, want %d", got, tc.pending)
			}
		})
	}
}

func apply(t *testing.T, tr *Tracker, steps []step) {
	t.Helper()
	for _, s := range steps {
		var err error
		switch s.op {
		case "d":
			err = tr.Delivered(s.offset)
		case "a":
			err = tr.Resolve(s.offset, true)
		case "n":
			err = tr.Resolve(s.offset, false)
		case "r":
			err = tr.Retract(s.offset)
		}
		if err != nil {
			t.Fatalf("%s %d: %v", s.op, s.offset, err)
		}
	}
}

func TestOffsetTrackerMisuse(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		bad   step
		want  error
	}{
		{"ack twice", []step{{"d", 0}, {"a", 0}}, step{"a", 0}, ErrUnknownOffset},
		{"ack twice, not yet committed", []step{{"d", 0}, {"d", 1}, {"a", 1}}, step{"a", 1}, ErrAckedTwice},
		{"nack then ack", []step{{"d", 0}, {"n", 0}}, step{"a", 0}, ErrAckedTwice},
		{"never delivered", []step{{"d", 0}, {"d", 2}}, step{"a", 1}, ErrUnknownOffset},
		{"beyond delivered", []step{{"d", 0}}, step{"a", 7}, ErrUnknownOffset},
		{"deliver backwards", []step{{"d", 5}}, step{"d", 5}, ErrOutOfOrder},
		{"deliver backwards after commit", []step{{"d", 5}, {"a", 5}}, step{"d", 3}, ErrOutOfOrder},
		{"retract acked", []step{{"d", 0}, {"d", 1}, {"a", 1}}, step{"r", 1}, ErrUnknownOffset},
		{"retract not last", []step{{"d", 0}, {"d", 1}}, step{"r", 0}, ErrUnknownOffset},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tr Tracker
			apply(t, &tr, tc.steps)
			beforeNext, beforeOK := tr.Committable()
			beforePending := tr.Pending()
			var err error
			switch tc.bad.op {
			case "d":
				err = tr.Delivered(tc.bad.offset)
			case "a":
				err = tr.Resolve(tc.bad.offset, true)
			case "r":
				err = tr.Retract(tc.bad.offset)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if n, ok := tr.Committable(); n != beforeNext || ok != beforeOK || tr.Pending() != beforePending {
				t.Errorf("state changed by a rejected call")
			}
		})
	}
}

// TestOffsetTrackerRandom checks the tracker against a direct computation of
// the contiguous prefix for random delivery gaps and ack orders.
func TestOffsetTrackerRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var tr Tracker
		n := 1 + rng.IntN(300)
		offsets := make([]int64, n)
		off := int64(rng.IntN(1000))
		for i := range offsets {
			off += 1 + int64(rng.IntN(3)) // gaps
			offsets[i] = off
			if err := tr.Delivered(off); err != nil {
				t.Fatal(err)
			}
		}
		acked := make([]bool, n)
		order := rng.Perm(n)
		for _, idx := range order[:rng.IntN(n+1)] {
			if err := tr.Resolve(offsets[idx], true); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			acked[idx] = true
			prefix := 0
			for prefix < n && acked[prefix] {
				prefix++
			}
			next, ok := tr.Committable()
			if prefix == 0 {
				if ok {
					t.Fatalf("round %d: committable %d with nothing contiguous", round, next)
				}
				continue
			}
			if !ok || next != offsets[prefix-1]+1 {
				t.Fatalf("round %d: Committable() = %d, %v; want %d", round, next, ok, offsets[prefix-1]+1)
			}
			if tr.Uncommitted() != n-prefix {
				t.Fatalf("round %d: Uncommitted() = %d, want %d", round, tr.Uncommitted(), n-prefix)
			}
		}
	}
}

func TestOffsetTrackerCompacts(t *testing.T) {
	var tr Tracker
	for i := range int64(1000) {
		if err := tr.Delivered(i); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			if err := tr.Resolve(i-1, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tr.Uncommitted() != 1 || len(tr.queue) > 130 {
		t.Errorf("uncommitted %d, queue length %d: want 1 and a compacted queue", tr.Uncommitted(), len(tr.queue))
	}
	if next, _ := tr.Committable(); next != 999 {
		t.Errorf("Committable = %d, want 999", next)
	}
}
