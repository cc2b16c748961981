package cebinding

import (
	"reflect"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

func TestSetAttribute(t *testing.T) {
	tests := []struct {
		name, attr, value string
		hasCT             bool
		wantErr           bool
		check             func(ev cloudevents.Event) bool
	}{
		{name: "id", attr: "id", value: "x", check: func(ev cloudevents.Event) bool { return ev.ID() == "x" }},
		{name: "source", attr: "source", value: "/s", check: func(ev cloudevents.Event) bool { return ev.Source() == "/s" }},
		{name: "type", attr: "type", value: "t", check: func(ev cloudevents.Event) bool { return ev.Type() == "t" }},
		{name: "subject", attr: "subject", value: "sub", check: func(ev cloudevents.Event) bool { return ev.Subject() == "sub" }},
		{name: "schemaurl is dataschema", attr: "schemaurl", value: "http://s", check: func(ev cloudevents.Event) bool { return ev.DataSchema() == "http://s" }},
		{name: "specversion ignored", attr: "specversion", value: "0.3", check: func(ev cloudevents.Event) bool { return ev.SpecVersion() == "1.0" }},
		{name: "datacontenttype without content type", attr: "datacontenttype", value: "text/plain", check: func(ev cloudevents.Event) bool { return ev.DataContentType() == "text/plain" }},
		{name: "datacontenttype with content type", attr: "datacontenttype", value: "text/plain", hasCT: true, check: func(ev cloudevents.Event) bool { return ev.DataContentType() == "" }},
		{name: "time", attr: "time", value: "2024-01-02T03:04:05.5Z", check: func(ev cloudevents.Event) bool {
			return ev.Time().Equal(time.Date(2024, 1, 2, 3, 4, 5, 5e8, time.UTC))
		}},
		{name: "bad time", attr: "time", value: "yesterday", wantErr: true},
		{name: "extension stays a string", attr: "count", value: "7", check: func(ev cloudevents.Event) bool { return ev.Extensions()["count"] == "7" }},
		{name: "bad extension name", attr: "bad-name", value: "v", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := cloudevents.NewEvent()
			err := SetAttribute(&ev, tt.attr, tt.value, tt.hasCT)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if tt.check != nil && !tt.check(ev) {
				t.Fatalf("event after SetAttribute(%q, %q): %s", tt.attr, tt.value, ev)
			}
		})
	}
}

func TestAttributesRoundTrip(t *testing.T) {
	ev := cloudevents.NewEvent()
	ev.SetID("id1")
	ev.SetSource("/src")
	ev.SetType("t")
	ev.SetSubject("sub")
	ev.SetTime(time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC))
	ev.SetDataSchema("http://schema")
	ev.SetDataContentType("application/json")
	ev.SetExtension("zeta", "z")
	ev.SetExtension("alpha", int32(3))

	var names, values []string
	if err := Attributes(ev, func(name, value string) {
		names = append(names, name)
		values = append(values, value)
	}); err != nil {
		t.Fatal(err)
	}
	wantNames := []string{"specversion", "id", "source", "type", "subject", "time", "dataschema", "datacontenttype", "alpha", "zeta"}
	wantValues := []string{"1.0", "id1", "/src", "t", "sub", "2024-01-02T03:04:05.000000006Z", "http://schema", "application/json", "3", "z"}
	if !reflect.DeepEqual(names, wantNames) || !reflect.DeepEqual(values, wantValues) {
		t.Fatalf("Attributes = %q %q, want %q %q", names, values, wantNames, wantValues)
	}

	// Every name Attributes yields reads back with Attribute and sets back
	// with SetAttribute (extensions come back as strings).
	back, err := NewEvent(ev.SpecVersion())
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		got, ok, err := Attribute(ev, name)
		if err != nil || !ok || got != values[i] {
			t.Fatalf("Attribute(%q) = %q, %v, %v; want %q", name, got, ok, err, values[i])
		}
		if err := SetAttribute(&back, name, values[i], false); err != nil {
			t.Fatalf("SetAttribute(%q): %v", name, err)
		}
	}
	if !back.Time().Equal(ev.Time()) || back.ID() != ev.ID() || back.DataContentType() != ev.DataContentType() || back.Extensions()["alpha"] != "3" {
		t.Fatalf("round trip: got %s, want %s", back, ev)
	}
}

func TestAttributeMissingOrEmpty(t *testing.T) {
	ev := cloudevents.NewEvent()
	ev.SetExtension("empty", "")
	for _, name := range []string{"subject", "time", "missing", "empty"} {
		if v, ok, err := Attribute(ev, name); ok || err != nil || v != "" {
			t.Errorf("Attribute(%q) = %q, %v, %v; want absent", name, v, ok, err)
		}
	}
	ev.SetExtension("partitionkey", "k")
	if v, ok, err := Attribute(ev, "PartitionKey"); !ok || err != nil || v != "k" {
		t.Errorf("Attribute(PartitionKey) = %q, %v, %v; want k (case-insensitive)", v, ok, err)
	}
}

func TestNewEvent(t *testing.T) {
	for _, tt := range []struct {
		spec    string
		wantErr bool
	}{{"1.0", false}, {"0.3", false}, {"2.0", true}, {"", true}} {
		ev, err := NewEvent(tt.spec)
		if (err != nil) != tt.wantErr {
			t.Fatalf("NewEvent(%q) err = %v, want error: %v", tt.spec, err, tt.wantErr)
		}
		if err == nil && ev.SpecVersion() != tt.spec {
			t.Fatalf("NewEvent(%q) specversion = %q", tt.spec, ev.SpecVersion())
		}
	}
}

func TestStructured(t *testing.T) {
	for _, tt := range []struct {
		ct   string
		want bool
	}{
		{StructuredContentType, true},
		{" Application/CloudEvents+JSON ; charset=utf-8", true},
		{"application/json", false},
		{"", false},
	} {
		if got := IsStructured(tt.ct); got != tt.want {
			t.Errorf("IsStructured(%q) = %v, want %v", tt.ct, got, tt.want)
		}
	}
	ev, err := DecodeStructured([]byte(`{"specversion":"1.0","id":"x","source":"/s","type":"t","ext":"v"}`))
	if err != nil || ev.ID() != "x" || ev.Extensions()["ext"] != "v" {
		t.Fatalf("DecodeStructured = %s, %v", ev, err)
	}
	if _, err := DecodeStructured([]byte(`{"specversion":`)); err == nil {
		t.Fatal("DecodeStructured(broken JSON): no error")
	}
}
