package kafkace

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/IBM/sarama"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/internal/cetest"
)

func hdrs(kv ...string) []*sarama.RecordHeader {
	out := make([]*sarama.RecordHeader, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &sarama.RecordHeader{Key: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return out
}

func TestDecode(t *testing.T) {
	base := []string{"ce_specversion", "1.0", "ce_id", "id-1", "ce_source", "/src", "ce_type", "t.created"}
	with := func(kv ...string) []*sarama.RecordHeader { return hdrs(append(append([]string{}, base...), kv...)...) }
	tests := []struct {
		name    string
		headers []*sarama.RecordHeader
		key     string
		value   string
		wantCE  bool
		wantErr bool
		check   func(t *testing.T, ev cloudevents.Event)
	}{
		{name: "plain record", value: "hello", wantCE: false},
		{name: "plain JSON record", headers: hdrs("content-type", "application/json"), value: `{"a":1}`, wantCE: false},
		{
			name: "binary, minimal", headers: with(), value: "payload", wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "id-1" || ev.Source() != "/src" || ev.Type() != "t.created" || string(ev.Data()) != "payload" {
					t.Errorf("event = %v", ev)
				}
				if len(ev.Extensions()) != 0 {
					t.Errorf("extensions = %v, want none", ev.Extensions())
				}
			},
		},
		{
			name: "binary, every attribute", key: "k1",
			headers: with("ce_subject", "sub", "ce_time", "2024-05-06T07:08:09.5Z", "ce_dataschema", "https://s/x.json",
				"content-type", "application/json", "ce_traceparent", "00-ab-cd-01", "unrelated", "x"),
			value: `{"n":1}`, wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.Subject() != "sub" || ev.DataSchema() != "https://s/x.json" || ev.DataContentType() != "application/json" {
					t.Errorf("attributes = %v", ev)
				}
				if want := time.Date(2024, 5, 6, 7, 8, 9, 5e8, time.UTC); !ev.Time().Equal(want) {
					t.Errorf("time = %v, want %v", ev.Time(), want)
				}
				if ev.Extensions()["traceparent"] != "00-ab-cd-01" || ev.Extensions()[PartitionKeyExtension] != "k1" {
					t.Errorf("extensions = %v", ev.Extensions())
				}
				if _, ok := ev.Extensions()["unrelated"]; ok {
					t.Errorf("non-ce_ header became an extension")
				}
			},
		},
		{
			name: "binary, partitionkey header wins over the key", key: "record-key",
			headers: with("ce_partitionkey", "header-key"), wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if got := ev.Extensions()[PartitionKeyExtension]; got != "header-key" {
					t.Errorf("partitionkey = %v", got)
				}
			},
		},
		{
			name:    "binary, header names in upper case",
			headers: hdrs("CE_SPECVERSION", "1.0", "Ce_Id", "x", "CE_SOURCE", "/s", "ce_TYPE", "t", "Content-Type", "text/plain"),
			wantCE:  true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "x" || ev.Type() != "t" || ev.DataContentType() != "text/plain" {
					t.Errorf("event = %v", ev)
				}
			},
		},
		{name: "binary, no data", headers: with(), wantCE: true, check: func(t *testing.T, ev cloudevents.Event) {
			if ev.Data() != nil {
				t.Errorf("data = %q, want none", ev.Data())
			}
		}},
		{name: "binary, missing id", headers: hdrs("ce_specversion", "1.0", "ce_source", "/s", "ce_type", "t"), wantCE: true, wantErr: true},
		{name: "binary, empty type", headers: with("ce_type", ""), wantCE: true, wantErr: true},
		{name: "binary, bad time", headers: with("ce_time", "yesterday"), wantCE: true, wantErr: true},
		{name: "binary, unknown specversion", headers: hdrs("ce_specversion", "2.0", "ce_id", "x", "ce_source", "/s", "ce_type", "t"), wantCE: true, wantErr: true},
		{name: "binary, bad extension name", headers: with("ce_bad-name", "v"), wantCE: true, wantErr: true},
		{
			name:    "structured",
			headers: hdrs("content-type", "application/cloudevents+json; charset=utf-8"),
			value:   `{"specversion":"1.0","id":"s1","source":"/s","type":"t","datacontenttype":"application/json","data":{"a":1},"ext1":"v"}`,
			key:     "k", wantCE: true,
			check: func(t *testing.T, ev cloudevents.Event) {
				if ev.ID() != "s1" || string(ev.Data()) != `{"a":1}` || ev.Extensions()["ext1"] != "v" || ev.Extensions()[PartitionKeyExtension] != "k" {
					t.Errorf("event = %v", ev)
				}
			},
		},
		{name: "structured, invalid JSON", headers: hdrs("content-type", StructuredContentType), value: `{"specversion":`, wantCE: true, wantErr: true},
		{name: "structured, missing source", headers: hdrs("content-type", StructuredContentType), value: `{"specversion":"1.0","id":"x","type":"t"}`, wantCE: true, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var key, value []byte
			if tc.key != "" {
				key = []byte(tc.key)
			}
			if tc.value != "" {
				value = []byte(tc.value)
			}
			ev, ok, err := Decode(tc.headers, key, value)
			if ok != tc.wantCE {
				t.Fatalf("ok = %v, want %v", ok, tc.wantCE)
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidCloudEvent) {
				t.Fatalf("err = %v, want it to wrap ErrInvalidCloudEvent", err)
			}
			if tc.check != nil && err == nil {
				tc.check(t, ev)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, ev := range []cloudevents.Event{
		cetest.Full(t, "full"),
		cetest.New(t, "bare", nil),
		cetest.New(t, "json", map[string]int{"a": 1}),
	} {
		t.Run(ev.ID(), func(t *testing.T) {
			rec, err := Encode(ev, "")
			if err != nil {
				t.Fatal(err)
			}
			hs := make([]*sarama.RecordHeader, len(rec.Headers))
			for i := range rec.Headers {
				hs[i] = &rec.Headers[i]
			}
			got, ok, err := Decode(hs, rec.Key, rec.Value)
			if !ok || err != nil {
				t.Fatalf("Decode: ok=%v err=%v", ok, err)
			}
			cetest.Equal(t, ev, got)
		})
	}
}

func TestEncodeKey(t *testing.T) {
	ev := cetest.Full(t, "e1") // partitionkey "key-e1", subject "orders/e1"
	tests := []struct {
		attr string
		want string // "" = no key
	}{
		{"", "key-e1"},
		{"partitionkey", "key-e1"},
		{"subject", "orders/e1"},
		{"id", "e1"},
		{"type", cetest.Type},
		{"attempt", "3"},
		{"time", "2024-05-06T07:08:09.123456789Z"},
		{"missing", ""},
	}
	for _, tc := range tests {
		t.Run(tc.attr, func(t *testing.T) {
			rec, err := Encode(ev, tc.attr)
			if err != nil {
				t.Fatal(err)
			}
			if string(rec.Key) != tc.want || (tc.want == "" && rec.Key != nil) {
				t.Errorf("key = %q, want %q", rec.Key, tc.want)
			}
		})
	}
	bare := cetest.New(t, "bare", nil)
	if rec, err := Encode(bare, ""); err != nil || rec.Key != nil {
		t.Errorf("event without partitionkey: key = %q, err = %v; want no key", rec.Key, err)
	}
}

func TestEncodeInvalid(t *testing.T) {
	ev := cloudevents.NewEvent()
	ev.SetSource("/s")
	ev.SetType("t") // no id
	if _, err := Encode(ev, ""); !errors.Is(err, ErrInvalidCloudEvent) {
		t.Fatalf("err = %v, want ErrInvalidCloudEvent", err)
	}
}

func TestDecodeMessage(t *testing.T) {
	if _, err := DecodeMessage(&sarama.ConsumerMessage{Value: []byte("x")}); !errors.Is(err, ErrInvalidCloudEvent) {
		t.Errorf("plain record: err = %v, want ErrInvalidCloudEvent", err)
	}
	ev, err := DecodeMessage(&sarama.ConsumerMessage{Headers: hdrs("ce_specversion", "1.0", "ce_id", "x", "ce_source", "/s", "ce_type", "t")})
	if err != nil || ev.ID() != "x" {
		t.Errorf("DecodeMessage = %v, %v", ev, err)
	}
}

// FuzzDecode: no input panics, and whatever decodes cleanly is valid and
// survives Encode.
func FuzzDecode(f *testing.F) {
	f.Add("1.0", "id", "/s", "t", "2024-01-01T00:00:00Z", "application/json", "ext", "v", []byte(`{"a":1}`))
	f.Add("0.3", "", "", "", "", "", "", "", []byte(nil))
	f.Add("", "", "", "", "", StructuredContentType, "", "", []byte(`{"specversion":"1.0","id":"a","source":"b","type":"c"}`))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, tm, ct, extName, extVal string, value []byte) {
		var kv []string
		if spec != "" {
			kv = append(kv, "ce_specversion", spec, "ce_id", id, "ce_source", source, "ce_type", typ, "ce_time", tm)
		}
		if ct != "" {
			kv = append(kv, "content-type", ct)
		}
		if extName != "" {
			kv = append(kv, "ce_"+extName, extVal)
		}
		ev, ok, err := Decode(hdrs(kv...), nil, value)
		if !ok || err != nil {
			return
		}
		if verr := ev.Validate(); verr != nil {
			t.Fatalf("decoded event invalid: %v", verr)
		}
		if _, err := Encode(ev, ""); err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
	})
}

// sdkDecodeV1 is how CloudEvents 1.0 binary records were decoded before
// Decoder's field-by-field path: through sdk-go's setters and Validate.
func sdkDecodeV1(headers []*sarama.RecordHeader, key, value []byte) (cloudevents.Event, error) {
	var ct []byte
	hasCT := false
	for _, h := range headers {
		if equalFold(h.Key, ContentTypeHeader) {
			ct, hasCT = h.Value, true
		}
	}
	ev, err := decodeBinary(headers, ct, hasCT, "1.0", value)
	if err != nil {
		return ev, err
	}
	if _, has := ev.Extensions()[PartitionKeyExtension]; !has && len(key) > 0 {
		ev.SetExtension(PartitionKeyExtension, string(key))
	}
	return ev, ev.Validate()
}

// A long-lived Decoder (its caches hit and miss in turn) decodes every
// CloudEvents 1.0 record as sdk-go's setters and Validate do: the same
// event, or an error for the same records.
func TestDecoderMatchesSDK(t *testing.T) {
	base := func(kv ...string) []*sarama.RecordHeader {
		return hdrs(append([]string{"ce_specversion", "1.0", "ce_id", "id-1", "ce_source", "/src", "ce_type", "t.created"}, kv...)...)
	}
	cases := map[string][]*sarama.RecordHeader{
		"minimal":                  base(),
		"content type":             base("content-type", "application/json"),
		"content type with params": base("content-type", "text/plain; charset=utf-8"),
		"content type padded":      base("content-type", "  application/json "),
		"content type blank":       base("content-type", "   "),
		"content type invalid":     base("content-type", "text/"),
		"content type header dup":  base("ce_datacontenttype", "text/csv", "content-type", "application/xml"),
		"datacontenttype attr":     base("ce_datacontenttype", "text/csv"),
		"another source":           hdrs("ce_specversion", "1.0", "ce_id", "id-2", "ce_source", "https://example.com/a?b=c#d", "ce_type", "t"),
		"source unparsable":        base("ce_source", "http://[::1"),
		"source blank":             hdrs("ce_specversion", "1.0", "ce_id", "x", "ce_source", "", "ce_type", "t"),
		"source space":             hdrs("ce_specversion", "1.0", "ce_id", "x", "ce_source", " ", "ce_type", "t"),
		"no source":                hdrs("ce_specversion", "1.0", "ce_id", "x", "ce_type", "t"),
		"id padded":                base("ce_id", "  id-3 "),
		"id blank":                 base("ce_id", "  "),
		"type padded":              base("ce_type", " t.padded "),
		"type blank":               base("ce_type", " "),
		"subject":                  base("ce_subject", " sub "),
		"subject blank":            base("ce_subject", "  "),
		"time":                     base("ce_time", "2024-05-06T07:08:09.5+02:00"),
		"time bad":                 base("ce_time", "yesterday"),
		"dataschema":               base("ce_dataschema", "https://s/x.json"),
		"dataschema relative":      base("ce_dataschema", "/x.json"),
		"extensions":               base("ce_traceparent", "00-ab-cd-01", "ce_tracestate", "a=b", "ce_Custom", "v", "ce_partitionkey", "pk"),
		"extension bad name":       base("ce_bad-name", "v"),
		"extension spec name":      base("ce_schemaurl", "https://s/old.json"),
		"upper case names":         hdrs("CE_SPECVERSION", "1.0", "CE_ID", "u", "CE_SOURCE", "/u", "CE_TYPE", "u.t", "CONTENT-TYPE", "text/plain"),
	}
	var d Decoder
	for round := range 2 {
		for name, headers := range cases {
			for _, key := range [][]byte{nil, []byte("rk")} {
				t.Run(fmt.Sprintf("%s/key=%s/round%d", name, key, round), func(t *testing.T) {
					value := []byte(`{"v":1}`)
					want, wantErr := sdkDecodeV1(headers, key, value)
					got, ok, err := d.Decode(headers, key, value)
					if !ok {
						t.Fatal("not decoded as a CloudEvent")
					}
					if (err != nil) != (wantErr != nil) {
						t.Fatalf("err = %v, sdk-go's = %v", err, wantErr)
					}
					if err != nil {
						if !errors.Is(err, ErrInvalidCloudEvent) {
							t.Errorf("err = %v, want it to wrap ErrInvalidCloudEvent", err)
						}
						return
					}
					if !reflect.DeepEqual(got.Context, want.Context) {
						t.Errorf("context\n%#v\nsdk-go's\n%#v", got.Context, want.Context)
					}
					if string(got.Data()) != string(want.Data()) || got.DataBase64 != want.DataBase64 {
						t.Errorf("data = %q, sdk-go's %q", got.Data(), want.Data())
					}
				})
			}
		}
	}
}

// BenchmarkDecode decodes a binary-mode record like B1's (four attributes,
// a partitionkey header, JSON content type, 1 KiB of data) with a
// long-lived Decoder, as the source does, and with Decode.
func BenchmarkDecode(b *testing.B) {
	headers := hdrs("ce_specversion", "1.0", "ce_id", "e-12345", "ce_source", "/sluice/bench", "ce_type", "dev.sluice.bench",
		"ce_partitionkey", "k-345", "content-type", "application/json")
	key, value := []byte("k-345"), make([]byte, 1024)
	var d Decoder
	for name, decode := range map[string]func([]*sarama.RecordHeader, []byte, []byte) (cloudevents.Event, bool, error){
		"Decoder": d.Decode, "Decode": Decode,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok, err := decode(headers, key, value); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
		})
	}
}
