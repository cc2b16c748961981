package invoke

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/pipelines"
)

// jsonCases are events the JSON encoder must write exactly as sdk-go's
// event.WriteJson does.
func jsonCases(t *testing.T) map[string]cloudevents.Event {
	t.Helper()
	ev := func(id string, edit func(e *cloudevents.Event)) cloudevents.Event {
		e := cetest.New(t, id, nil)
		if edit != nil {
			edit(&e)
		}
		return e
	}
	setData := func(ct string, data any) func(e *cloudevents.Event) {
		return func(e *cloudevents.Event) {
			if err := e.SetData(ct, data); err != nil {
				t.Fatalf("SetData(%q): %v", ct, err)
			}
		}
	}
	raw := func(ct string, data string) func(e *cloudevents.Event) {
		return func(e *cloudevents.Event) {
			if ct != "" {
				e.SetDataContentType(ct)
			}
			e.DataEncoded = []byte(data)
		}
	}
	u, err := url.Parse("https://example.com/schemas/x.json")
	if err != nil {
		t.Fatal(err)
	}
	v03 := cloudevents.NewEvent(cloudevents.VersionV03)
	v03.SetID("v03")
	v03.SetSource("/v03")
	v03.SetType("t.v03")
	_ = v03.SetData(cloudevents.TextPlain, "hello")

	return map[string]cloudevents.Event{
		"minimal":                  ev("min", nil),
		"every attribute":          cetest.Full(t, "full"),
		"json data, no type":       ev("j0", raw("", `{"a":[1,2,{"b":null}]}`)),
		"json data with charset":   ev("j1", raw("application/json; charset=utf-8", `{"a":1}`)),
		"text/json data":           ev("j3", raw("text/json", `"s"`)),
		"cloudevents+json data":    ev("j4", raw("application/cloudevents+json", `{"x":1}`)),
		"vendor +json as a string": ev("j5", raw("application/vnd.acme+json", `{"x":"y"}`)),
		"binary data (SetData)":    ev("b1", setData("application/octet-stream", []byte{0, 1, 2, 0xfe, 0xff, '"'})),
		"binary marked json type":  ev("b2", setData("application/json", []byte(`{"a":1}`))),
		"text data":                ev("t1", raw("text/plain", "plain \"quoted\" back\\slash\nnew\rline\ttab \x01\x1f ünïcødé \u2028 <&>")),
		"text data with charset":   ev("t2", raw("text/plain; charset=utf-8", "héllo")),
		"empty text data":          ev("t3", raw("text/plain", "")),
		"text via SetData":         ev("t4", setData("text/plain", "from SetData")),
		"escapes in attributes": ev(`id "with" \ quotes`, func(e *cloudevents.Event) {
			e.SetType("type\twith\ttabs\x00")
			e.SetSubject("sübject\n</script>")
			e.SetSource("urn:x:y?q=1#frag")
		}),
		"relative source":      ev("s1", func(e *cloudevents.Event) { e.SetSource("/relative/path with space") }),
		"time without nanos":   ev("tm1", func(e *cloudevents.Event) { e.SetTime(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)) }),
		"time in another zone": ev("tm2", func(e *cloudevents.Event) { e.SetTime(time.Date(2020, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))) }),
		"extensions of every simple type": ev("x1", func(e *cloudevents.Event) {
			e.SetExtension("zstr", "z \"v\"")
			e.SetExtension("aint", -42)
			e.SetExtension("maxint", int32(2147483647))
			e.SetExtension("flag", false)
			e.SetExtension("bin", []byte{0xff, 0, 'a'})
			e.SetExtension("empty", "")
			e.SetExtension("partitionkey", "k-1")
		}),
		"extension URI (sdk-go path)":       ev("x2", func(e *cloudevents.Event) { e.SetExtension("ref", u) }),
		"extension timestamp (sdk-go path)": ev("x3", func(e *cloudevents.Event) { e.SetExtension("when", time.Unix(1e9, 5).UTC()) }),
		"extensions and text data": ev("x4", func(e *cloudevents.Event) {
			raw("text/csv", "a,b\n1,2")(e)
			e.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			e.SetExtension("tracestate", "congo=t61rcWkgMzE")
		}),
		"specversion 0.3 (sdk-go path)": v03,
	}
}

// sdkJSON is sdk-go's JSON for e.
func sdkJSON(t *testing.T, e *cloudevents.Event) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := event.WriteJson(e, &buf); err != nil {
		t.Fatalf("event.WriteJson: %v", err)
	}
	return buf.Bytes()
}

func TestJSONEncoderMatchesSDK(t *testing.T) {
	for name, e := range jsonCases(t) {
		t.Run(name, func(t *testing.T) {
			var w jsonEncoder
			if err := w.encode(&e); err != nil {
				t.Fatalf("encode: %v", err)
			}
			if want := sdkJSON(t, &e); !bytes.Equal(w.buf, want) {
				t.Errorf("encoded\n%s\nsdk-go writes\n%s", w.buf, want)
			}
		})
	}
}

func TestEncodeBatchMatchesSDK(t *testing.T) {
	cases := jsonCases(t)
	var in []cloudevents.Event
	for _, e := range cases {
		in = append(in, e)
	}
	// Twice the same events: the encoder's cached source must not leak
	// from one event into the next.
	in = append(in, in...)
	want := []byte{'['}
	for i := range in {
		if i > 0 {
			want = append(want, ',')
		}
		want = append(want, sdkJSON(t, &in[i])...)
	}
	want = append(want, ']')
	h, body, err := encodeBatch(in, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ct := h.Get("Content-Type"); ct != mediaBatch {
		t.Errorf("Content-Type = %q", ct)
	}
	if !bytes.Equal(body, want) {
		t.Errorf("batch\n%s\nsdk-go writes\n%s", body, want)
	}
	var got []cloudevents.Event
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("sdk-go cannot read the batch back: %v", err)
	}
	if len(got) != len(in) {
		t.Fatalf("read back %d events, want %d", len(got), len(in))
	}
}

// Where event.WriteJson writes invalid JSON, the encoder writes valid JSON
// that reads back as the event meant.
func TestJSONEncoderWhereSDKIsInvalid(t *testing.T) {
	bad := string([]byte{'a', 0xff, 0xfe, 'b'})
	tests := []struct {
		name  string
		edit  func(e *cloudevents.Event)
		check func(t *testing.T, got cloudevents.Event)
	}{
		{
			name: "binary data not marked base64",
			edit: func(e *cloudevents.Event) {
				e.SetDataContentType("application/octet-stream")
				e.DataEncoded = []byte{0, 0x80, 0xff}
			},
			check: func(t *testing.T, got cloudevents.Event) {
				if !bytes.Equal(got.Data(), []byte{0, 0x80, 0xff}) {
					t.Errorf("data = %q", got.Data())
				}
			},
		},
		{
			name: "invalid UTF-8 in attributes",
			edit: func(e *cloudevents.Event) {
				e.SetSubject(bad)
				e.SetExtension("ext", bad)
			},
			check: func(t *testing.T, got cloudevents.Event) {
				if got.Subject() != "a\ufffdb" || got.Extensions()["ext"] != "a\ufffdb" {
					t.Errorf("subject %q, ext %q", got.Subject(), got.Extensions()["ext"])
				}
			},
		},
		{
			name: "empty data declared as JSON",
			edit: func(e *cloudevents.Event) {
				e.SetDataContentType("application/json")
				e.DataEncoded = []byte{}
			},
			check: func(t *testing.T, got cloudevents.Event) {
				if len(got.Data()) != 0 {
					t.Errorf("data = %q, want none", got.Data())
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := cetest.New(t, "inv", nil)
			tc.edit(&e)
			var w jsonEncoder
			if err := w.encode(&e); err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !json.Valid(w.buf) {
				t.Fatalf("invalid JSON: %q", w.buf)
			}
			got := cloudevents.NewEvent()
			if err := got.UnmarshalJSON(w.buf); err != nil {
				t.Fatalf("sdk-go cannot read %s: %v", w.buf, err)
			}
			tc.check(t, got)
		})
	}
}

func TestJSONEncoderRequiresAttributes(t *testing.T) {
	for name, edit := range map[string]func(e *cloudevents.Event){
		"no id":     func(e *cloudevents.Event) { e.Context.(*event.EventContextV1).ID = "" },
		"no type":   func(e *cloudevents.Event) { e.Context.(*event.EventContextV1).Type = "" },
		"no source": func(e *cloudevents.Event) { e.Context.(*event.EventContextV1).Source = types.URIRef{} },
	} {
		t.Run(name, func(t *testing.T) {
			e := cetest.New(t, "req", nil)
			edit(&e)
			var w jsonEncoder
			if err := w.encode(&e); err == nil || !strings.Contains(err.Error(), ErrInvalidEvent.Error()) {
				t.Errorf("err = %v, want ErrInvalidEvent", err)
			}
		})
	}
}

// BenchmarkEncodeBatch compares the batch encoder with sdk-go's writer on
// 100 events of about 1 KiB, like B1b's.
func BenchmarkEncodeBatch(b *testing.B) {
	in := make([]cloudevents.Event, 100)
	pad := strings.Repeat("x", 900)
	for i := range in {
		e := cetest.New(b, "e-"+string(rune('a'+i%26)), nil)
		e.SetDataContentType("application/json")
		e.DataEncoded = []byte(`{"id":"e","key":"k-1","seq":1,"pad":"` + pad + `"}`)
		e.SetExtension("partitionkey", "k-1")
		in[i] = e
	}
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := encodeBatch(in, nil, 2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk-go", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var buf bytes.Buffer
			buf.WriteByte('[')
			for i := range in {
				if i > 0 {
					buf.WriteByte(',')
				}
				if err := event.WriteJson(&in[i], &buf); err != nil {
					b.Fatal(err)
				}
			}
			buf.WriteByte(']')
		}
	})
}

// Recycled request bodies must never carry another call's bytes, also when
// the function answers before reading the body (the transport may then
// still be writing it, or close it, after Do returns).
func TestPooledBodiesAreNotShared(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run(fmt.Sprintf("answer before reading %v", early), func(t *testing.T) {
			f := newFunction(t, pipelines.ModeBatch, func(w http.ResponseWriter, r *http.Request) {
				if early {
					w.WriteHeader(http.StatusOK)
					return
				}
				in := receive(t, r)
				prefix, _, _ := strings.Cut(in[0].ID(), "/")
				for i, e := range in {
					if want := fmt.Sprintf("%s/%d", prefix, i); e.ID() != want {
						t.Errorf("event %d of batch %s has id %q, want %q", i, prefix, e.ID(), want)
					}
				}
			})
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for call := range 30 {
						batch := make([]cloudevents.Event, 1+(g+call)%20)
						for i := range batch {
							batch[i] = cetest.New(t, fmt.Sprintf("g%d.%d/%d", g, call, i), strings.Repeat("p", 100*g))
						}
						if _, err := f.Invoke(context.Background(), batch); err != nil {
							t.Errorf("Invoke: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// BenchmarkInvokeBatch measures a whole batch call (100 events of ~1 KiB)
// against a no-op function on loopback, from parallel callers.
func BenchmarkInvokeBatch(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	f, err := NewHTTP(HTTPConfig{URL: srv.URL, Mode: pipelines.ModeBatch, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	in := make([]cloudevents.Event, 100)
	for i := range in {
		in[i] = cetest.New(b, fmt.Sprintf("e-%d", i), map[string]any{"seq": i, "pad": strings.Repeat("x", 900)})
		in[i].SetExtension("partitionkey", fmt.Sprintf("k-%d", i))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.Invoke(context.Background(), in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
