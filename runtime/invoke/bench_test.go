package invoke

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/sluicehq/sluice/internal/cetest"
	"github.com/sluicehq/sluice/pipelines"
)

// BenchmarkInvokeBinary measures a whole call against a no-op function on
// loopback, from parallel callers.
func BenchmarkInvokeBinary(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	f, err := NewHTTP(HTTPConfig{URL: srv.URL, Mode: pipelines.ModeBinary, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	in := []cloudevents.Event{cetest.Full(b, "bench")}
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

// BenchmarkEncodeBinary compares the direct header writer with sdk-go's
// binding.Write path (used only for CloudEvents 0.3).
func BenchmarkEncodeBinary(b *testing.B) {
	e := cetest.Full(b, "bench")
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := encodeBinary(&e, &sourceCache{}, 2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sdk-go", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req := &http.Request{Header: make(http.Header, 12)}
			if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(&e), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
