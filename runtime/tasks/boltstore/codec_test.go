package boltstore

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/tasks"
)

func TestRecordRoundTrip(t *testing.T) {
	at := func(s int64) *time.Time { v := time.UnixMicro(1_700_000_000_000_000 + s).UTC(); return &v }
	full := &tasks.Task{
		ID: "id-1", Tenant: "acme", Function: "greet", State: tasks.Succeeded, Attempts: 3, Retries: 2,
		IdempotencyKey: "k", DuplicateOf: "", Event: []byte(`{"id":"e"}`), Result: []byte{0, 1, 2},
		Error: "boom", LastStatus: -1, Labels: map[string]string{"a": "1", "b": ""},
		Times:   tasks.Timestamps{Received: *at(0), Queued: at(1), Dispatched: at(2), Started: at(3), Finished: at(4), Delivered: at(5)},
		Version: 7,
	}
	sparse := &tasks.Task{ID: "id-2", Tenant: "acme", Function: "f", State: tasks.Duplicate, DuplicateOf: "id-1",
		Times: tasks.Timestamps{Received: *at(9), Finished: at(10)}, Version: 1}
	for _, want := range []*tasks.Task{full, sparse} {
		got, err := decode("acme", encode(want))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
		b := encode(want)
		for n := 1; n < len(b); n++ {
			if _, err := decode("acme", b[:n]); !errors.Is(err, errTruncated) {
				t.Fatalf("%d of %d bytes: %v, want errTruncated", n, len(b), err)
			}
		}
	}
}

// TestLegacyJSONRecord: records written before the binary format are read.
func TestLegacyJSONRecord(t *testing.T) {
	v := []byte(`{"id":"x","fn":"f","st":"queued","ik":"k","ev":"eyJpZCI6ImUifQ==","lb":{"a":"b"},"tr":1700000000000000,"tq":1700000000000001,"v":1}`)
	got, err := decode("acme", v)
	if err != nil {
		t.Fatal(err)
	}
	q := time.UnixMicro(1700000000000001).UTC()
	want := &tasks.Task{ID: "x", Tenant: "acme", Function: "f", State: tasks.Queued, IdempotencyKey: "k",
		Event: []byte(`{"id":"e"}`), Labels: map[string]string{"a": "b"},
		Times: tasks.Timestamps{Received: time.UnixMicro(1700000000000000).UTC(), Queued: &q}, Version: 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}
