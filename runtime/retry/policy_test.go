package retry

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/pipelines"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	t0        = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	retriable = Verdict{Class: Retriable, Reason: "http 500"}
)

func spec(attempts int, backoff string, delay, maxDelay, retryAfterMax time.Duration) pipelines.RetrySpec {
	return pipelines.RetrySpec{
		Attempts:      attempts,
		Backoff:       backoff,
		Delay:         pipelines.Duration(delay),
		MaxDelay:      pipelines.Duration(maxDelay),
		RetryAfterMax: pipelines.Duration(retryAfterMax),
	}
}

func TestExponentialBounds(t *testing.T) {
	t.Parallel()
	p := NewPolicy(spec(20, "exponential", 100*time.Millisecond, 3*time.Second, time.Minute), 0)
	const samples = 2000
	for attempt := 1; attempt < 20; attempt++ {
		// Expected un-jittered ceiling: 100ms·2^(attempt-1), capped at 3s.
		ceiling := 100 * time.Millisecond
		for i := 1; i < attempt; i++ {
			ceiling *= 2
		}
		ceiling = min(ceiling, 3*time.Second)
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range samples {
			d, ok := p.Next(attempt, retriable, t0, t0)
			if !ok {
				t.Fatalf("attempt %d: no retry", attempt)
			}
			if d < ceiling/2 || d > ceiling {
				t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, ceiling/2, ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Jitter must actually spread the delays over the interval: with
		// 2000 uniform samples both ends are reached within 5%.
		span := ceiling - ceiling/2
		if lo > ceiling/2+span/20 || hi < ceiling-span/20 {
			t.Fatalf("attempt %d: samples span only [%v, %v] of [%v, %v]", attempt, lo, hi, ceiling/2, ceiling)
		}
	}
}

func TestExponentialConcurrentUse(t *testing.T) {
	t.Parallel()
	p := NewPolicy(spec(10, "", 10*time.Millisecond, time.Second, 0), time.Hour)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 1000 {
				attempt := i%9 + 1
				d, ok := p.Next(attempt, retriable, t0, t0)
				if !ok || d <= 0 || d > time.Second {
					t.Errorf("attempt %d: %v %v", attempt, d, ok)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestConstantBackoff(t *testing.T) {
	t.Parallel()
	p := NewPolicy(spec(6, "constant", 250*time.Millisecond, 10*time.Second, 0), 0)
	for attempt := 1; attempt < 6; attempt++ {
		d, ok := p.Next(attempt, retriable, t0, t0)
		if !ok || d != 250*time.Millisecond {
			t.Fatalf("attempt %d: %v %v, want 250ms true", attempt, d, ok)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	p := NewPolicy(spec(5, "exponential", 100*time.Millisecond, time.Second, 20*time.Second), 0)
	tests := []struct {
		name       string
		retryAfter time.Duration
		want       time.Duration
	}{
		{"shorter than backoff replaces it", 10 * time.Millisecond, 10 * time.Millisecond},
		{"above MaxDelay is allowed", 5 * time.Second, 5 * time.Second},
		{"capped at RetryAfterMax", time.Hour, 20 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Verdict{Class: Retriable, Overload: true, RetryAfter: tt.retryAfter, Status: 429}
			d, ok := p.Next(3, v, t0, t0)
			if !ok || d != tt.want {
				t.Fatalf("Next = %v %v, want %v true", d, ok, tt.want)
			}
		})
	}
}

func TestAttemptsCutoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		attempts, attempt int
		retry             bool
	}{
		{1, 1, false},
		{3, 1, true},
		{3, 2, true},
		{3, 3, false},
		{3, 4, false},
		{0, DefaultAttempts - 1, true}, // zero → default
		{0, DefaultAttempts, false},
	}
	for _, tt := range tests {
		p := NewPolicy(spec(tt.attempts, "", 0, 0, 0), 0)
		if _, ok := p.Next(tt.attempt, retriable, t0, t0); ok != tt.retry {
			t.Errorf("attempts=%d attempt=%d: retry=%v, want %v", tt.attempts, tt.attempt, ok, tt.retry)
		}
	}
}

func TestNoRetryUnlessRetriable(t *testing.T) {
	t.Parallel()
	p := NewPolicy(spec(5, "", 0, 0, 0), 0)
	for _, v := range []Verdict{{Class: Success}, {Class: Permanent, Status: 404}, {Class: Permanent, RetryAfter: time.Second}} {
		if d, ok := p.Next(1, v, t0, t0); ok || d != 0 {
			t.Errorf("Next(%+v) = %v %v, want no retry", v, d, ok)
		}
	}
}

func TestMaxEventAgeCutoff(t *testing.T) {
	t.Parallel()
	p := NewPolicy(spec(100, "constant", time.Second, 0, time.Minute), 10*time.Second)
	tests := []struct {
		name    string
		elapsed time.Duration
		v       Verdict
		retry   bool
	}{
		{"young event", 0, retriable, true},
		{"retry lands exactly at the age limit", 9 * time.Second, retriable, true},
		{"retry would land past the limit", 9*time.Second + 1, retriable, false},
		{"already expired", 11 * time.Second, retriable, false},
		{"Retry-After past the limit", 0, Verdict{Class: Retriable, RetryAfter: 30 * time.Second}, false},
		{"Retry-After within the limit", 0, Verdict{Class: Retriable, RetryAfter: 5 * time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ok := p.Next(1, tt.v, t0, t0.Add(tt.elapsed))
			if ok != tt.retry {
				t.Fatalf("retry = %v, want %v", ok, tt.retry)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	p := NewPolicy(pipelines.RetrySpec{}, 0)
	if p.Attempts() != DefaultAttempts {
		t.Errorf("Attempts = %d", p.Attempts())
	}
	d, ok := p.Next(1, retriable, t0, t0)
	if !ok || d < DefaultDelay/2 || d > DefaultDelay {
		t.Errorf("first delay %v %v", d, ok)
	}
	d, ok = p.Next(4, Verdict{Class: Retriable, RetryAfter: time.Hour}, t0, t0)
	if !ok || d != DefaultRetryAfterMax {
		t.Errorf("Retry-After cap %v %v", d, ok)
	}
	// A huge attempt number must neither overflow nor exceed the cap.
	big := NewPolicy(spec(1<<30, "", 0, 0, 0), 0)
	d, ok = big.Next(1<<29, retriable, t0, t0)
	if !ok || d < DefaultMaxDelay/2 || d > DefaultMaxDelay {
		t.Errorf("attempt 2^29: %v %v", d, ok)
	}
	// MaxDelay below Delay is raised to Delay.
	low := NewPolicy(spec(3, "", time.Second, time.Millisecond, 0), 0)
	d, _ = low.Next(2, retriable, t0, t0)
	if d < 500*time.Millisecond || d > time.Second {
		t.Errorf("MaxDelay<Delay: %v", d)
	}
}
