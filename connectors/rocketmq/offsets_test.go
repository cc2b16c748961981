package rocketmq

import (
	"errors"
	"testing"
)

func TestOffsetTracker(t *testing.T) {
	type step struct {
		op     string // "d" deliver, "a" ack, "n" nack
		offset int64
		err    error
	}
	tests := []struct {
		name            string
		steps           []step
		wantNext        int64
		wantOK          bool
		wantUncommitted int
		wantPending     int
	}{
		{"nothing", nil, 0, false, 0, 0},
		{"delivered only", []step{{"d", 5, nil}, {"d", 6, nil}}, 0, false, 2, 2},
		{"in order", []step{{"d", 0, nil}, {"d", 1, nil}, {"a", 0, nil}, {"a", 1, nil}}, 2, true, 0, 0},
		{"gap holds the commit", []step{{"d", 0, nil}, {"d", 1, nil}, {"d", 2, nil}, {"a", 0, nil}, {"a", 2, nil}}, 1, true, 2, 1},
		{"gap filled", []step{{"d", 0, nil}, {"d", 1, nil}, {"d", 2, nil}, {"a", 2, nil}, {"a", 0, nil}, {"a", 1, nil}}, 3, true, 0, 0},
		{"filtered offsets", []step{{"d", 3, nil}, {"d", 7, nil}, {"a", 3, nil}, {"a", 7, nil}}, 8, true, 0, 0},
		{"nack never commits", []step{{"d", 0, nil}, {"d", 1, nil}, {"n", 0, nil}, {"a", 1, nil}}, 0, false, 2, 0},
		{"ack twice", []step{{"d", 0, nil}, {"d", 1, nil}, {"a", 1, nil}, {"a", 1, errAckedTwice}}, 0, false, 2, 1},
		{"unknown offset", []step{{"d", 0, nil}, {"a", 4, errUnknownOffset}}, 0, false, 1, 1},
		{"committed offset", []step{{"d", 0, nil}, {"a", 0, nil}, {"a", 0, errUnknownOffset}}, 1, true, 0, 0},
		{"out of order delivery", []step{{"d", 3, nil}, {"d", 2, errOutOfOrder}}, 0, false, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr offsetTracker
			for i, s := range tt.steps {
				var err error
				switch s.op {
				case "d":
					err = tr.Delivered(s.offset)
				case "a":
					err = tr.Resolve(s.offset, true)
				case "n":
					err = tr.Resolve(s.offset, false)
				}
				if !errors.Is(err, s.err) {
					t.Fatalf("step %d %s %d: err %v, want %v", i, s.op, s.offset, err, s.err)
				}
			}
			next, ok := tr.Committable()
			if next != tt.wantNext || ok != tt.wantOK {
				t.Errorf("Committable = %d, %v; want %d, %v", next, ok, tt.wantNext, tt.wantOK)
			}
			if got := tr.Uncommitted(); got != tt.wantUncommitted {
				t.Errorf("Uncommitted = %d, want %d", got, tt.wantUncommitted)
			}
			if got := tr.Pending(); got != tt.wantPending {
				t.Errorf("Pending = %d, want %d", got, tt.wantPending)
			}
		})
	}
}

// TestOffsetTrackerCompacts: memory follows the uncommitted span.
func TestOffsetTrackerCompacts(t *testing.T) {
	var tr offsetTracker
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
