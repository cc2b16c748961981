package rocketmqce

import (
	"errors"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/internal/cetest"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ev   cloudevents.Event
	}{
		{"full", cetest.Full(t, "full-1")},
		{"minimal", cetest.New(t, "min-1", nil)},
		{"binary data", func() cloudevents.Event {
			e := cetest.New(t, "bin-1", nil)
			_ = e.SetData("application/octet-stream", []byte{0, 1, 2, 0xff})
			return e
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Encode(tt.ev, "")
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, ok, err := Decode(m.Properties, m.Key, m.Body)
			if !ok || err != nil {
				t.Fatalf("Decode: ok=%v err=%v", ok, err)
			}
			cetest.Equal(t, tt.ev, got)
		})
	}
}

func TestEncodeKey(t *testing.T) {
	ev := cetest.Full(t, "k-1")
	tests := []struct {
		attr, want string
	}{
		{"", "key-k-1"},
		{"partitionkey", "key-k-1"},
		{"ID", "k-1"},
		{"subject", "orders/k-1"},
		{"attempt", "3"},
		{"missing", ""},
	}
	for _, tt := range tests {
		m, err := Encode(ev, tt.attr)
		if err != nil {
			t.Fatalf("Encode(%q): %v", tt.attr, err)
		}
		if m.Key != tt.want {
			t.Errorf("key for %q = %q, want %q", tt.attr, m.Key, tt.want)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	// With data: binary mode, where attributes are properties.
	sep := cetest.New(t, "sep", "x")
	sep.SetSubject("a\x01b")
	big := cetest.New(t, "big", "x")
	big.SetExtension("huge", strings.Repeat("x", MaxPropertiesSize))
	for _, ev := range []cloudevents.Event{sep, big, cloudevents.NewEvent()} {
		if _, err := Encode(ev, ""); !errors.Is(err, ErrInvalidCloudEvent) {
			t.Errorf("Encode(%q) = %v, want ErrInvalidCloudEvent", ev.ID(), err)
		}
	}
}

func TestDecode(t *testing.T) {
	binary := func(extra map[string]string) map[string]string {
		p := map[string]string{"ce_specversion": "1.0", "ce_id": "b-1", "ce_source": "/s", "ce_type": "t"}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	tests := []struct {
		name     string
		props    map[string]string
		firstKey string
		body     string
		wantCE   bool
		wantErr  bool
		check    func(t *testing.T, ev cloudevents.Event)
	}{
		{name: "plain message", props: map[string]string{"KEYS": "k", "color": "red"}, body: "x"},
		{name: "plain json content type", props: map[string]string{"content-type": "application/json"}, body: "{}"},
		{
			name: "binary", props: binary(map[string]string{"content-type": "text/plain", "ce_color": "red", "CE_Region": "eu"}),
			firstKey: "k1", body: "hi", wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				exts := ev.Extensions()
				if ev.DataContentType() != "text/plain" || string(ev.Data()) != "hi" || exts["color"] != "red" || exts["region"] != "eu" || exts[PartitionKeyExtension] != "k1" {
					t.Errorf("decoded %v", ev)
				}
			},
		},
		{
			name: "binary keeps its own partitionkey", props: binary(map[string]string{"ce_partitionkey": "own"}),
			firstKey: "k1", wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if got := ev.Extensions()[PartitionKeyExtension]; got != "own" {
					t.Errorf("partitionkey = %v, want own", got)
				}
			},
		},
		{
			name: "structured", props: map[string]string{"content-type": "application/cloudevents+json; charset=utf-8"},
			body: `{"specversion":"1.0","id":"s-1","source":"/s","type":"t","data":{"a":1}}`, wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "s-1" || !cetest.SameJSON(ev.Data(), []byte(`{"a":1}`)) {
					t.Errorf("decoded %v", ev)
				}
			},
		},
		{name: "bad specversion", props: map[string]string{"ce_specversion": "2.0", "ce_id": "x"}, wantCE: true, wantErr: true},
		{name: "bad time", props: binary(map[string]string{"ce_time": "yesterday"}), wantCE: true, wantErr: true},
		{name: "missing id", props: map[string]string{"ce_specversion": "1.0", "ce_source": "/s", "ce_type": "t"}, wantCE: true, wantErr: true},
		{name: "bad extension name", props: binary(map[string]string{"ce_bad-name": "v"}), wantCE: true, wantErr: true},
		{name: "broken structured", props: map[string]string{"content-type": StructuredContentType}, body: "{nope", wantCE: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, ok, err := Decode(tt.props, tt.firstKey, []byte(tt.body))
			if ok != tt.wantCE {
				t.Fatalf("ok = %v, want %v (err %v)", ok, tt.wantCE, err)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidCloudEvent) {
				t.Errorf("err = %v, want ErrInvalidCloudEvent", err)
			}
			if tt.check != nil {
				tt.check(t, ev)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("1.0", "id", "/s", "t", "2024-05-06T07:08:09Z", "ext", "application/json", []byte(`{"a":1}`))
	f.Add("0.3", "", "", "", "bad", "Bad-Name", StructuredContentType, []byte(`{`))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, tm, ext, ct string, body []byte) {
		props := map[string]string{
			"ce_specversion": spec, "ce_id": id, "ce_source": source, "ce_type": typ,
			"ce_time": tm, "ce_" + ext: "v", "content-type": ct,
		}
		ev, ok, err := Decode(props, "", body)
		if !ok {
			t.Fatalf("a message with ce_specversion was not taken as a CloudEvent")
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidCloudEvent) {
				t.Fatalf("error %v does not wrap ErrInvalidCloudEvent", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("decoded event is invalid: %v", err)
		}
		m, err := Encode(ev, "")
		if err != nil {
			if errors.Is(err, ErrInvalidCloudEvent) {
				return // e.g. a value holding 0x01
			}
			t.Fatalf("Encode of a decoded event: %v", err)
		}
		again, ok, err := Decode(m.Properties, m.Key, m.Body)
		if !ok || err != nil {
			t.Fatalf("re-decode: ok=%v err=%v", ok, err)
		}
		cetest.Equal(t, ev, again)
	})
}

// TestEncodeWithoutData: brokers refuse empty bodies, so an event without
// data is written in structured mode.
func TestEncodeWithoutData(t *testing.T) {
	ev := cetest.New(t, "nodata", nil)
	ev.SetExtension("partitionkey", "k")
	m, err := Encode(ev, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Body) == 0 || m.Properties[ContentTypeProperty] != StructuredContentType || m.Key != "k" {
		t.Fatalf("encoded %+v, want a structured body with key k", m)
	}
	if len(m.Properties) != 1 {
		t.Errorf("properties = %v, want only content-type", m.Properties)
	}
}
