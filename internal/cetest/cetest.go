// Package cetest builds and compares CloudEvents in tests. It is a test
// helper: only _test.go files import it.
package cetest

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Source and Type are the attributes New gives every event.
const (
	Source = "/sluice/cetest"
	Type   = "dev.sluice.test"
)

// New returns a valid CloudEvents 1.0 event with the given id, a fixed
// source and type, and data marshalled as application/json (no data when
// data is nil).
func New(t testing.TB, id string, data any) cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource(Source)
	e.SetType(Type)
	if data != nil {
		if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
			t.Fatalf("cetest.New(%q): set data: %v", id, err)
		}
	}
	return e
}

// Full returns an event with every optional attribute set (subject, time,
// dataschema, datacontenttype) and extensions of each CloudEvents type, for
// round-trip tests.
func Full(t testing.TB, id string) cloudevents.Event {
	t.Helper()
	e := New(t, id, map[string]any{"id": id, "n": 42, "text": "héllo"})
	e.SetSubject("orders/" + id)
	e.SetTime(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC))
	e.SetDataSchema("https://example.com/schemas/order.json")
	e.SetExtension("partitionkey", "key-"+id)
	e.SetExtension("attempt", 3)
	e.SetExtension("replayed", true)
	e.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	e.SetExtension("tracestate", "congo=t61rcWkgMzE")
	return e
}

// Equal fails t unless want and got have the same attributes, extensions
// (compared in their canonical string form, since transports may turn an
// integer extension into a string) and data (compared as JSON when both
// parse as JSON).
func Equal(t testing.TB, want, got cloudevents.Event) {
	t.Helper()
	attrs := []struct {
		name      string
		want, got any
	}{
		{"specversion", want.SpecVersion(), got.SpecVersion()},
		{"id", want.ID(), got.ID()},
		{"source", want.Source(), got.Source()},
		{"type", want.Type(), got.Type()},
		{"subject", want.Subject(), got.Subject()},
		{"time", want.Time().UTC(), got.Time().UTC()},
		{"dataschema", want.DataSchema(), got.DataSchema()},
		{"datacontenttype", want.DataContentType(), got.DataContentType()},
		{"extensions", canonical(t, want.Extensions()), canonical(t, got.Extensions())},
	}
	for _, a := range attrs {
		if !reflect.DeepEqual(a.want, a.got) {
			t.Errorf("event %q: %s = %#v, want %#v", want.ID(), a.name, a.got, a.want)
		}
	}
	if !SameJSON(want.Data(), got.Data()) {
		t.Errorf("event %q: data = %q, want %q", want.ID(), got.Data(), want.Data())
	}
}

func canonical(t testing.TB, exts map[string]any) map[string]string {
	t.Helper()
	out := make(map[string]string, len(exts))
	for k, v := range exts {
		s, err := types.Format(v)
		if err != nil {
			t.Fatalf("extension %q: %v", k, err)
		}
		out[k] = s
	}
	return out
}

// SameJSON reports whether a and b are equal as JSON values, or equal as
// bytes when either is not JSON.
func SameJSON(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}
