package invoke

import (
	"errors"
	"net/http"
	"testing"
)

// FuzzDecodeResponse: any 2xx answer decodes to a Result of valid events or
// to an *Error with the answer's status; never a panic.
func FuzzDecodeResponse(f *testing.F) {
	f.Add("application/cloudevents+json", "", 200, []byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"x":1}}`), false)
	f.Add("application/cloudevents-batch+json", "", 200, []byte(`[{"specversion":"1.0","id":"a","source":"/s","type":"t"}]`), true)
	f.Add("application/json", "1.0", 200, []byte(`{"x":1}`), false)
	f.Add("application/json", "", 207, []byte(`{"failed":[{"index":0,"status":503,"retryAfter":1.5}],"results":[]}`), true)
	f.Add("text/plain", "", 200, []byte("hello"), false)
	f.Fuzz(func(t *testing.T, contentType, specversion string, status int, body []byte, batch bool) {
		if status < 200 || status > 299 {
			status = 200
		}
		h := http.Header{}
		h.Set("Content-Type", contentType)
		if specversion != "" {
			h.Set("Ce-Specversion", specversion)
			h.Set("Ce-Id", "id")
			h.Set("Ce-Source", "/src")
			h.Set("Ce-Type", "type")
		}
		res, err := decodeResponse(status, h, body, 3, batch)
		if err != nil {
			var ie *Error
			if !errors.As(err, &ie) || ie.Status != status {
				t.Fatalf("error %v is not an *Error with status %d", err, status)
			}
			return
		}
		for i := range res.Events {
			if verr := res.Events[i].Validate(); verr != nil {
				t.Fatalf("result %d invalid: %v", i, verr)
			}
		}
		for i, fe := range res.Failed {
			if i < 0 || i >= 3 || fe.Status < 400 || fe.Status > 599 || fe.RetryAfter < 0 {
				t.Fatalf("bad failure entry %d: %+v", i, fe)
			}
		}
	})
}
