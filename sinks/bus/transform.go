package bus

import (
	"bytes"
	"encoding/json"
	"fmt"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/sluicehq/sluice/pipelines"
)

// transform rewrites an event's data before a target receives it (a
// target's transform: path or template). It is immutable and safe for
// concurrent use.
type transform struct {
	path     []any                    // path: the selected value becomes the data
	template []pipelines.TemplatePart // template: the rendered text becomes the data
}

// newTransform compiles spec; nil gives nil (no transform).
func newTransform(spec *pipelines.TransformSpec) (*transform, error) {
	switch {
	case spec == nil:
		return nil, nil
	case spec.Path != "":
		p, err := pipelines.ParseEventPath(spec.Path)
		if err != nil {
			return nil, fmt.Errorf("transform: %w", err)
		}
		return &transform{path: p}, nil
	case spec.Template != "":
		parts, err := pipelines.ParseTemplate(spec.Template)
		if err != nil {
			return nil, fmt.Errorf("transform: %w", err)
		}
		if parts == nil {
			parts = []pipelines.TemplatePart{}
		}
		return &transform{template: parts}, nil
	}
	return nil, fmt.Errorf("transform: set path or template")
}

// apply rewrites ev's data in place. The data becomes JSON for a path (the
// selected value; null when it is missing); for a template the rendered
// text, as application/json when it is valid JSON and text/plain
// otherwise. dataschema is removed: it described the old data. An error
// means the event cannot be read as JSON (its data claims to be JSON and
// is not).
func (t *transform) apply(ev *cloudevents.Event) error {
	view, err := eventView(ev)
	if err != nil {
		return err
	}
	var data []byte
	ct := "application/json"
	if t.template == nil {
		v, _ := lookup(view, t.path)
		if data, err = marshal(v); err != nil {
			return err
		}
	} else {
		var b bytes.Buffer
		for _, p := range t.template {
			if p.Path == nil {
				b.WriteString(p.Text)
				continue
			}
			v, _ := lookup(view, p.Path)
			enc, err := marshal(v)
			if err != nil {
				return err
			}
			if _, ok := v.(string); ok {
				enc = enc[1 : len(enc)-1] // JSON-escaped, without the quotes
			}
			b.Write(enc)
		}
		data = b.Bytes()
		if !json.Valid(data) {
			ct = "text/plain"
		}
	}
	ev.SetDataSchema("")
	ev.SetDataContentType(ct)
	ev.DataEncoded = data
	ev.DataBase64 = false
	return nil
}

// eventView is the event as transforms see it: its CloudEvents JSON form
// (attributes and extensions by name) with the data under "data" — parsed
// when it is JSON, a string otherwise (base64 for binary data). Numbers
// keep their exact text.
func eventView(ev *cloudevents.Event) (map[string]any, error) {
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("transform: event data is not what its content type says: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var view map[string]any
	if err := d.Decode(&view); err != nil {
		return nil, fmt.Errorf("transform: %w", err)
	}
	if b64, ok := view["data_base64"]; ok {
		delete(view, "data_base64")
		view["data"] = b64
	}
	return view, nil
}

// lookup follows path (object keys and array indexes) from v.
func lookup(v any, path []any) (any, bool) {
	for _, step := range path {
		switch s := step.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}
			if v, ok = m[s]; !ok {
				return nil, false
			}
		case int:
			a, ok := v.([]any)
			if !ok || s >= len(a) {
				return nil, false
			}
			v = a[s]
		default:
			return nil, false
		}
	}
	return v, true
}

// marshal encodes v as JSON without HTML escaping and without the
// encoder's trailing newline.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("transform: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
