package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/invoke"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassifyStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status   int
		class    Class
		overload bool
	}{
		{100, Permanent, false},
		{301, Permanent, false},
		{304, Permanent, false},
		{400, Permanent, false},
		{401, Permanent, false},
		{403, Permanent, false},
		{404, Permanent, false},
		{408, Retriable, false},
		{409, Permanent, false},
		{413, Permanent, false},
		{422, Permanent, false},
		{429, Retriable, true},
		{499, Permanent, false},
		{500, Retriable, false},
		{501, Permanent, false},
		{502, Retriable, false},
		{503, Retriable, true},
		{504, Retriable, true},
		{505, Retriable, false},
		{599, Retriable, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			err := &invoke.Error{Status: tt.status, Body: "\n  amount must be positive \nsecond line"}
			v := Classify(err)
			if v.Class != tt.class || v.Overload != tt.overload {
				t.Fatalf("Classify(%d) = %v overload=%v, want %v overload=%v", tt.status, v.Class, v.Overload, tt.class, tt.overload)
			}
			if v.Status != tt.status {
				t.Errorf("Status = %d, want %d", v.Status, tt.status)
			}
			if want := fmt.Sprintf("http %d: amount must be positive", tt.status); v.Reason != want {
				t.Errorf("Reason = %q, want %q", v.Reason, want)
			}
		})
	}
}

func TestClassifyRetryAfterCarried(t *testing.T) {
	t.Parallel()
	for _, status := range []int{429, 503} {
		v := Classify(&invoke.Error{Status: status, RetryAfter: 7 * time.Second})
		if v.RetryAfter != 7*time.Second {
			t.Errorf("status %d: RetryAfter = %v, want 7s", status, v.RetryAfter)
		}
	}
}

func TestClassifyErrors(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	tests := []struct {
		name     string
		err      error
		class    Class
		overload bool
		reason   string
	}{
		{"nil", nil, Success, false, "ok"},
		{"invoke timeout flag", &invoke.Error{Timeout: true, Err: errors.New("x")}, Retriable, true, "timeout"},
		{"invoke refused", &invoke.Error{Err: refused}, Retriable, true, "connection refused"},
		{"invoke reset", &invoke.Error{Err: reset}, Retriable, true, "connection reset"},
		{"invoke net timeout", &invoke.Error{Err: &net.OpError{Op: "read", Err: timeoutErr{}}}, Retriable, true, "timeout"},
		{"invoke deadline", &invoke.Error{Err: context.DeadlineExceeded}, Retriable, true, "timeout"},
		{"invoke EOF", &invoke.Error{Err: io.EOF}, Retriable, false, "connection closed"},
		{"invoke unexpected EOF", &invoke.Error{Err: fmt.Errorf("read body: %w", io.ErrUnexpectedEOF)}, Retriable, false, "connection closed"},
		{"invoke canceled", &invoke.Error{Err: context.Canceled}, Retriable, false, "canceled"},
		{"plain canceled", context.Canceled, Retriable, false, "canceled"},
		{"wrapped canceled", fmt.Errorf("invoke: %w", context.Canceled), Retriable, false, "canceled"},
		{"caller deadline", context.DeadlineExceeded, Retriable, false, "deadline exceeded"},
		{"wrapped caller deadline", fmt.Errorf("invoke: %w", context.DeadlineExceeded), Retriable, false, "deadline exceeded"},
		{"invoke 2xx unusable", &invoke.Error{Status: 200, Body: "unusable response: bad json"}, Permanent, false, "http 200: unusable response: bad json"},
		{"in-process net timeout", fmt.Errorf("handler: %w", timeoutErr{}), Retriable, true, "timeout"},
		{"plain refused", fmt.Errorf("post: %w", refused), Retriable, true, "connection refused"},
		{"unknown", errors.New("something odd"), Retriable, false, "something odd"},
		{"permanent", MarkPermanent(errors.New("decode: bad ce_ header")), Permanent, false, "decode: bad ce_ header"},
		{"wrapped permanent", fmt.Errorf("pipeline x: %w", MarkPermanent(errors.New("decode: bad json"))), Permanent, false, "decode: bad json"},
		{"invalid event", fmt.Errorf("encode: %w", invoke.ErrInvalidEvent), Permanent, false, "encode: " + invoke.ErrInvalidEvent.Error()},
		{"forbidden address", fmt.Errorf("dial: %w", invoke.ErrForbiddenAddress), Permanent, false, "dial: " + invoke.ErrForbiddenAddress.Error()},
		{"permanent beats retriable", MarkPermanent(&invoke.Error{Status: 503}), Permanent, false, "function answered 503 Service Unavailable"},
		{"wrapped invoke 503", fmt.Errorf("attempt 2: %w", &invoke.Error{Status: 503}), Retriable, true, "http 503"},
		{"wrapped invoke 404", fmt.Errorf("attempt 2: %w", &invoke.Error{Status: 404}), Permanent, false, "http 404"},
		{"joined", errors.Join(errors.New("a"), &invoke.Error{Status: 429}), Retriable, true, "http 429"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := Classify(tt.err)
			if v.Class != tt.class || v.Overload != tt.overload || v.Reason != tt.reason {
				t.Fatalf("Classify(%v) = {%v overload=%v reason=%q}, want {%v overload=%v reason=%q}",
					tt.err, v.Class, v.Overload, v.Reason, tt.class, tt.overload, tt.reason)
			}
		})
	}
}

// TestClassifyRealTransport classifies errors produced by a real HTTP client
// so that the errno matching is checked against what net/http returns.
func TestClassifyRealTransport(t *testing.T) {
	t.Parallel()

	t.Run("refused by a closed port", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatal("expected a dial error from a closed port")
		}
		v := Classify(&invoke.Error{Err: err})
		if v.Class != Retriable || !v.Overload || v.Reason != "connection refused" {
			t.Fatalf("Classify(%v) = %+v", err, v)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		// Accept and hold connections without answering.
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		client := &http.Client{Transport: &http.Transport{}, Timeout: 50 * time.Millisecond}
		defer client.CloseIdleConnections()
		resp, err := client.Get("http://" + ln.Addr().String() + "/")
		if err == nil {
			resp.Body.Close()
			t.Fatal("expected a timeout")
		}
		ln.Close()
		for c := range accepted {
			c.Close()
		}
		// As invoke reports a per-call timeout.
		v := Classify(&invoke.Error{Timeout: true, Err: err})
		if v.Class != Retriable || !v.Overload || v.Reason != "timeout" {
			t.Fatalf("Classify(%v) = %+v", err, v)
		}
		// Unwrapped, the same error reads as the caller giving up (it
		// wraps context.DeadlineExceeded), which is not an overload.
		v = Classify(err)
		if v.Class != Retriable || v.Overload {
			t.Fatalf("Classify(%v) = %+v", err, v)
		}
	})

	t.Run("reset by peer", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Read the request, then close with SO_LINGER 0: the kernel
			// sends RST instead of FIN.
			buf := make([]byte, 4096)
			_, _ = c.Read(buf)
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}()
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		defer client.CloseIdleConnections()
		resp, err := client.Post("http://"+ln.Addr().String()+"/", "text/plain", strings.NewReader("x"))
		<-done
		t.Logf("client error: %v", err)
		if err == nil {
			resp.Body.Close()
			t.Fatal("expected a reset")
		}
		v := Classify(&invoke.Error{Err: err})
		if v.Class != Retriable {
			t.Fatalf("Classify(%v) = %+v", err, v)
		}
		// Depending on timing the client sees the RST while reading (reset)
		// or an EOF; both are retriable, only the reset is an overload.
		if errors.Is(err, syscall.ECONNRESET) != v.Overload {
			t.Fatalf("Classify(%v): overload=%v inconsistent with ECONNRESET", err, v.Overload)
		}
	})
}

func TestReasonShortened(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 300)
	v := Classify(MarkPermanent(errors.New(long)))
	if len(v.Reason) > maxReasonLen+len("…") {
		t.Fatalf("reason is %d bytes", len(v.Reason))
	}
	if !strings.HasSuffix(v.Reason, "…") || !strings.HasPrefix(v.Reason, "éé") {
		t.Fatalf("reason = %q", v.Reason)
	}
	for _, r := range v.Reason {
		if r == '\uFFFD' {
			t.Fatalf("reason cut inside a rune: %q", v.Reason)
		}
	}
}

func TestMarkPermanentNil(t *testing.T) {
	t.Parallel()
	if err := MarkPermanent(nil); err != nil {
		t.Fatalf("MarkPermanent(nil) = %v", err)
	}
	inner := errors.New("decode: x")
	err := MarkPermanent(inner)
	if !errors.Is(err, inner) {
		t.Fatal("MarkPermanent must keep the chain")
	}
	if err.Error() != inner.Error() {
		t.Fatalf("Error() = %q", err.Error())
	}
}

func TestClassString(t *testing.T) {
	t.Parallel()
	for c, want := range map[Class]string{Success: "success", Retriable: "retriable", Permanent: "permanent", Class(9): "Class(9)"} {
		if got := c.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(c), got, want)
		}
	}
}
