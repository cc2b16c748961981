package bus

import (
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/pipelines"
)

func TestTransform(t *testing.T) {
	base := func() cloudevents.Event {
		ev := cloudevents.NewEvent()
		ev.SetID("id-1")
		ev.SetSource("/src")
		ev.SetType("com.acme.t")
		ev.SetExtension("tenantid", "acme")
		ev.SetExtension("priority", 7)
		_ = ev.SetData("application/json", []byte(`{"order":{"id":"o-1","total":12.50,"items":[{"sku":"a"},{"sku":"b"}]},"note":"say \"hi\" <b>"}`))
		ev.DataBase64 = false
		return ev
	}
	text := func() cloudevents.Event {
		ev := base()
		_ = ev.SetData("text/plain", []byte("plain words"))
		ev.DataBase64 = false
		return ev
	}
	for _, c := range []struct {
		name     string
		spec     pipelines.TransformSpec
		in       func() cloudevents.Event
		data, ct string
	}{
		{"path to an object", pipelines.TransformSpec{Path: "$.data.order"}, base, `{"id":"o-1","items":[{"sku":"a"},{"sku":"b"}],"total":12.50}`, "application/json"},
		{"path keeps number text", pipelines.TransformSpec{Path: "$.data.order.total"}, base, `12.50`, "application/json"},
		{"path with index and quoted key", pipelines.TransformSpec{Path: `$.data["order"].items[1].sku`}, base, `"b"`, "application/json"},
		{"path to an attribute", pipelines.TransformSpec{Path: "$.source"}, base, `"/src"`, "application/json"},
		{"path to an integer extension", pipelines.TransformSpec{Path: "$.priority"}, base, `7`, "application/json"},
		{"missing path is null", pipelines.TransformSpec{Path: "$.data.nope.deeper"}, base, `null`, "application/json"},
		{"index out of range is null", pipelines.TransformSpec{Path: "$.data.order.items[5]"}, base, `null`, "application/json"},
		{"whole event", pipelines.TransformSpec{Path: "$"}, base, "", "application/json"},
		{"text data as a string", pipelines.TransformSpec{Path: "$.data"}, text, `"plain words"`, "application/json"},
		{"template to JSON", pipelines.TransformSpec{Template: `{"order": "${.data.order.id}", "total": ${.data.order.total}, "tenant": "${.tenantid}"}`}, base,
			`{"order": "o-1", "total": 12.50, "tenant": "acme"}`, "application/json"},
		{"template escapes strings", pipelines.TransformSpec{Template: `{"note": "${.data.note}"}`}, base, `{"note": "say \"hi\" <b>"}`, "application/json"},
		{"template to text", pipelines.TransformSpec{Template: `order ${.data.order.id} from ${.source}`}, base, `order o-1 from /src`, "text/plain"},
		{"template with objects and missing values", pipelines.TransformSpec{Template: `${.data.order.items[0]} ${.nope}`}, base, `{"sku":"a"} null`, "text/plain"},
		{"template literal dollar brace", pipelines.TransformSpec{Template: `$${.id} is ${.id}`}, base, `${.id} is id-1`, "text/plain"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tf, err := newTransform(&c.spec)
			if err != nil {
				t.Fatal(err)
			}
			ev := c.in()
			ev.SetDataSchema("https://schema")
			if err := tf.apply(&ev); err != nil {
				t.Fatal(err)
			}
			if c.data != "" && string(ev.Data()) != c.data {
				t.Errorf("data %s, want %s", ev.Data(), c.data)
			}
			if ev.DataContentType() != c.ct || ev.DataSchema() != "" {
				t.Errorf("content type %q, schema %q", ev.DataContentType(), ev.DataSchema())
			}
			if ev.ID() != "id-1" || ev.Type() != "com.acme.t" || ev.Extensions()["tenantid"] != "acme" {
				t.Errorf("attributes changed: %v", ev)
			}
			if err := ev.Validate(); err != nil {
				t.Errorf("transformed event invalid: %v", err)
			}
		})
	}
}

func TestTransformRefusesDataThatIsNotWhatItClaims(t *testing.T) {
	tf, err := newTransform(&pipelines.TransformSpec{Path: "$.data"})
	if err != nil {
		t.Fatal(err)
	}
	ev := cloudevents.NewEvent()
	ev.SetID("x")
	ev.SetSource("/s")
	ev.SetType("t")
	ev.SetDataContentType("application/json")
	ev.DataEncoded = []byte(`{not json`)
	if err := tf.apply(&ev); err == nil {
		t.Fatalf("transformed invalid JSON data into %s", ev.Data())
	}
	for _, bad := range []pipelines.TransformSpec{{Path: "data"}, {Template: "${nope"}, {}} {
		if _, err := newTransform(&bad); err == nil {
			t.Errorf("newTransform(%+v) accepted", bad)
		}
	}
}

func TestCodecRoundTripsBinaryAndTypedExtensions(t *testing.T) {
	ev := cloudevents.NewEvent()
	ev.SetID("bin")
	ev.SetSource("/s")
	ev.SetType("t")
	ev.SetExtension("count", 3)
	ev.SetExtension("flag", true)
	ev.SetDataContentType("application/octet-stream")
	ev.DataEncoded = []byte{0xff, 0x00, 0xfe, 'a'}
	data, headers, err := encode(&ev)
	if err != nil {
		t.Fatal(err)
	}
	if headers["content-type"] != structuredType {
		t.Fatalf("headers %v", headers)
	}
	var back cloudevents.Event
	if err := back.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	if string(back.Data()) != string(ev.Data()) {
		t.Fatalf("data %x, want %x", back.Data(), ev.Data())
	}
	if back.Extensions()["count"] != int32(3) || back.Extensions()["flag"] != true {
		t.Fatalf("extensions %#v", back.Extensions())
	}
}
