package amqpce

import (
	"errors"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/types"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/sluicehq/sluice/internal/cetest"
)

func TestRoundTrip(t *testing.T) {
	for _, ev := range []cloudevents.Event{
		cetest.Full(t, "full-1"),
		cetest.New(t, "plain-1", nil),
		cetest.New(t, "json-1", map[string]int{"n": 1}),
	} {
		p, err := Encode(ev)
		if err != nil {
			t.Fatalf("Encode(%s): %v", ev.ID(), err)
		}
		if p.MessageId != ev.ID() || p.DeliveryMode != amqp.Persistent || p.ContentType != ev.DataContentType() || p.Type != ev.Type() {
			t.Errorf("%s: properties %+v", ev.ID(), p)
		}
		got, ok, err := Decode(p.Headers, p.ContentType, p.Body)
		if !ok || err != nil {
			t.Fatalf("Decode(%s): ok=%v err=%v", ev.ID(), ok, err)
		}
		cetest.Equal(t, ev, got)
	}
}

// TestEncodeTime: the time attribute keeps its nanoseconds (an AMQP
// timestamp only holds seconds, so the header is a string).
func TestEncodeTime(t *testing.T) {
	ev := cetest.New(t, "t-1", nil)
	ts := time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)
	ev.SetTime(ts)
	p, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Headers[Prefix+"time"]; got != "2024-01-02T03:04:05.123456789Z" {
		t.Errorf("time header = %v", got)
	}
	if !p.Timestamp.Equal(ts) {
		t.Errorf("timestamp property = %v", p.Timestamp)
	}
}

func TestEncodeInvalid(t *testing.T) {
	ev := cloudevents.NewEvent()
	ev.SetID("x") // no source, no type
	if _, err := Encode(ev); !errors.Is(err, ErrInvalidCloudEvent) {
		t.Errorf("Encode of an invalid event: %v, want ErrInvalidCloudEvent", err)
	}
}

func TestDecode(t *testing.T) {
	base := func(prefix string) amqp.Table {
		return amqp.Table{
			prefix + "specversion": "1.0",
			prefix + "id":          "id-1",
			prefix + "source":      "/src",
			prefix + "type":        "com.example",
		}
	}
	with := func(tb amqp.Table, kv ...any) amqp.Table {
		out := amqp.Table{}
		for k, v := range tb {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i].(string)] = kv[i+1]
		}
		return out
	}
	ts := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name        string
		headers     amqp.Table
		contentType string
		body        string
		wantCE      bool
		wantErr     string // substring; "" = no error
		check       func(t *testing.T, ev cloudevents.Event)
	}{
		{name: "not a CloudEvent", headers: amqp.Table{"x": "y"}, contentType: "text/plain", body: "hi"},
		{name: "no headers at all", body: "hi"},
		{
			name: "binary, current prefix", headers: base(Prefix), contentType: "application/json", body: `{"a":1}`, wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "id-1" || ev.DataContentType() != "application/json" || string(ev.Data()) != `{"a":1}` {
					t.Errorf("event %v", ev)
				}
			},
		},
		{
			name: "binary, legacy prefix", headers: base(LegacyPrefix), wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.Type() != "com.example" || ev.DataContentType() != "" {
					t.Errorf("event %v", ev)
				}
			},
		},
		{
			name: "current prefix wins over legacy", headers: with(base(Prefix), LegacyPrefix+"id", "old"), wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "id-1" {
					t.Errorf("id = %q, want id-1", ev.ID())
				}
			},
		},
		{
			name: "prefix case-insensitive", headers: amqp.Table{"CloudEvents_SpecVersion": "1.0", "cloudevents_id": "i", "CLOUDEVENTS_SOURCE": "/s", "cloudEvents_type": "t"}, wantCE: true,
		},
		{
			name: "typed header values", wantCE: true,
			headers: with(base(Prefix), Prefix+"time", ts, Prefix+"count", int32(7), Prefix+"big", int64(1)<<40,
				Prefix+"flag", true, Prefix+"when", ts, Prefix+"raw", []byte("bytes"), Prefix+"ratio", 0.5),
			check: func(t *testing.T, ev cloudevents.Event) {
				if !ev.Time().Equal(ts) {
					t.Errorf("time = %v", ev.Time())
				}
				want := map[string]string{"count": "7", "big": "1099511627776", "flag": "true", "when": "2024-05-06T07:08:09Z", "raw": "bytes", "ratio": "0.5"}
				for k, w := range want {
					got, err := types.Format(ev.Extensions()[k])
					if err != nil || got != w {
						t.Errorf("extension %s = %q (%v), want %q", k, got, err, w)
					}
				}
				if _, ok := ev.Extensions()["count"].(int32); !ok {
					t.Errorf("count is %T, want int32 (Integer)", ev.Extensions()["count"])
				}
			},
		},
		{
			name: "datacontenttype header without content-type", headers: with(base(Prefix), Prefix+"datacontenttype", "text/csv"), wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.DataContentType() != "text/csv" {
					t.Errorf("datacontenttype = %q", ev.DataContentType())
				}
			},
		},
		{name: "missing id", headers: amqp.Table{Prefix + "specversion": "1.0", Prefix + "source": "/s", Prefix + "type": "t"}, wantCE: true, wantErr: "id"},
		{name: "unknown specversion", headers: with(base(Prefix), Prefix+"specversion", "2.0"), wantCE: true, wantErr: "specversion"},
		{name: "specversion not a string", headers: with(base(Prefix), Prefix+"specversion", int32(1)), wantCE: true, wantErr: "want a string"},
		{name: "bad time", headers: with(base(Prefix), Prefix+"time", "yesterday"), wantCE: true, wantErr: "time"},
		{name: "bad extension name", headers: with(base(Prefix), Prefix+"bad-name", "x"), wantCE: true, wantErr: "bad-name"},
		{name: "nested table extension", headers: with(base(Prefix), Prefix+"nested", amqp.Table{"a": "b"}), wantCE: true, wantErr: "unsupported header type"},
		{name: "source not a string", headers: with(base(Prefix), Prefix+"source", int64(3)), wantCE: true, wantErr: "source"},
		{
			name: "structured", contentType: "application/cloudevents+json; charset=utf-8", wantCE: true,
			body: `{"specversion":"1.0","id":"s-1","source":"/s","type":"t","data":{"x":1}}`,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "s-1" || !cetest.SameJSON(ev.Data(), []byte(`{"x":1}`)) {
					t.Errorf("event %v", ev)
				}
			},
		},
		{name: "structured, broken JSON", contentType: StructuredContentType, body: `{"specversion":`, wantCE: true, wantErr: "structured JSON"},
		{name: "structured, missing type", contentType: StructuredContentType, body: `{"specversion":"1.0","id":"s","source":"/s"}`, wantCE: true, wantErr: "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, ok, err := Decode(tt.headers, tt.contentType, []byte(tt.body))
			if ok != tt.wantCE {
				t.Fatalf("ok = %v, want %v (err %v)", ok, tt.wantCE, err)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.wantErr != "":
				if !errors.Is(err, ErrInvalidCloudEvent) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalidCloudEvent mentioning %q", err, tt.wantErr)
				}
				return
			}
			if tt.check != nil {
				tt.check(t, ev)
			}
		})
	}
}

func TestDecodeDelivery(t *testing.T) {
	if _, err := DecodeDelivery(&amqp.Delivery{MessageId: "m", Body: []byte("x")}); !errors.Is(err, ErrInvalidCloudEvent) {
		t.Errorf("plain message: %v, want ErrInvalidCloudEvent", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("1.0", "id", "/s", "t", "2024-01-02T03:04:05Z", "application/json", []byte(`{"a":1}`))
	f.Add("", "", "", "", "", StructuredContentType, []byte(`{"specversion":"1.0","id":"x","source":"/","type":"t"}`))
	f.Fuzz(func(t *testing.T, spec, id, src, typ, tm, ct string, body []byte) {
		h := amqp.Table{}
		for k, v := range map[string]string{"specversion": spec, "id": id, "source": src, "type": typ, "time": tm} {
			if v != "" {
				h[Prefix+k] = v
			}
		}
		ev, ok, err := Decode(h, ct, body)
		if ok && err == nil {
			if verr := ev.Validate(); verr != nil {
				t.Fatalf("Decode returned an invalid event: %v", verr)
			}
			p, err := Encode(ev)
			if err != nil {
				t.Fatalf("Encode of a decoded event: %v", err)
			}
			again, ok, err := Decode(p.Headers, p.ContentType, p.Body)
			if !ok || err != nil || again.ID() != ev.ID() {
				t.Fatalf("re-decode: ok=%v err=%v id=%q want %q", ok, err, again.ID(), ev.ID())
			}
		}
		if err != nil && !errors.Is(err, ErrInvalidCloudEvent) {
			t.Fatalf("error %v does not wrap ErrInvalidCloudEvent", err)
		}
	})
}
