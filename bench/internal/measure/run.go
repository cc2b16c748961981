package measure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

// Metric names read from Sluice's /metrics.
const (
	MetricProcessed   = "sluice_events_processed_total"
	MetricLimit       = "sluice_flow_limit"
	MetricFlowIn      = "sluice_flow_in_flight"
	MetricFlowWait    = "sluice_flow_waiting"
	MetricFnDuration  = "sluice_function_duration_seconds"
	MetricEvtDuration = "sluice_event_duration_seconds"
	MetricEvtInFlight = "sluice_events_in_flight"
)

// Sample is one observation of Sluice and the function.
type Sample struct {
	At        time.Time
	Processed float64 // events finished (every outcome but "abandoned")
	Limit     float64 // AIMD limit
	InFlight  float64 // invocations in flight
	Waiting   float64 // invocations waiting for a slot of the limit
	// Held is events read and not yet acknowledged (queued, running or
	// waiting to be retried).
	Held   float64
	Sluice procs.Usage
	Fn     procs.FunctionStats
}

// Opts says when a measurement ends and how it is shown.
type Opts struct {
	// Target ends the run once this many events are processed (0: none).
	Target int64
	// MaxDuration ends the run this long after the first function call
	// (0: none).
	MaxDuration time.Duration
	// Until ends the run at this time (zero: none).
	Until time.Time
	// Every is the sampling interval (default 100 ms). Each sample costs
	// Sluice one /metrics scrape.
	Every time.Duration
	// Label names the run in progress output and log files.
	Label string
	// Drain is Sluice's --drain-timeout (default 5 s).
	Drain time.Duration
	// Profile, if set, runs Sluice with --pprof and saves profiles of it.
	Profile *Profile
}

// Profile says which Go profiles of Sluice a run saves into the work
// directory, all starting After the first function call: a CPU profile of
// CPU as <label>-cpu.pprof and an execution trace of Trace as
// <label>-trace.out (either 0: not taken). With Memory, a heap profile
// (in-use and allocated) is saved After the first call as
// <label>-heap-after.pprof and at the run's end, before Sluice stops, as
// <label>-heap-end.pprof with the goroutines as <label>-goroutines.txt;
// and every sample's memory figures (/proc VmRSS, VmHWM, RssAnon, RssFile; Go's heap allocated, in use,
// idle, released, stacks, GC target, goroutines from /metrics) go to
// <label>-mem.tsv. A profile that cannot be taken is reported on the
// progress output; the run goes on.
type Profile struct {
	After, CPU, Trace time.Duration
	Memory            bool
}

// Run is what one Sluice run measured.
type Run struct {
	// First is when the function first saw a call from this Sluice (to
	// within 10 ms); End is the sample that ended the run.
	First, End time.Time
	// Processed is the count at End.
	Processed float64
	// Capped is true when the run ended on time, not on Target.
	Capped bool
	// CPUSeconds is Sluice's CPU time between First and End.
	CPUSeconds float64
	// PeakRSS is Sluice's VmHWM at End (bytes).
	PeakRSS int64
	// Samples from First on; Final is the /metrics scrape at End.
	Samples []Sample
	Final   procs.Metrics
	// Fn0 is the function's /stats before Sluice started.
	Fn0 procs.FunctionStats
}

// Rate is events processed per second between First and End.
func (r *Run) Rate() float64 {
	d := r.End.Sub(r.First).Seconds()
	if d <= 0 {
		return 0
	}
	return r.Processed / d
}

// Outcome returns the processed count of one outcome at End.
func (r *Run) Outcome(pipelineID, outcome string) float64 {
	return r.Final.Sum(MetricProcessed, map[string]string{"pipeline": pipelineID, "outcome": outcome})
}

// Sluice writes the pipeline into workDir, starts the sluice binary on
// it, waits until it is ready, and samples it until opts say stop; then it
// stops Sluice. A configuration Sluice rejects comes back as an error
// wrapping *procs.ExitedError.
func Sluice(ctx context.Context, bin, workDir string, pl Pipeline, fn *procs.Function, opts Opts, progress *harness.Progress) (*Run, error) {
	if opts.Every <= 0 {
		opts.Every = 100 * time.Millisecond
	}
	if opts.Drain <= 0 {
		opts.Drain = 5 * time.Second
	}
	file := strings.ReplaceAll(opts.Label, " ", "_")
	path, err := pl.Write(workDir, file+".yaml")
	if err != nil {
		return nil, err
	}
	r := &Run{}
	if r.Fn0, err = fn.Stats(ctx); err != nil {
		return nil, err
	}
	var extra []string
	if opts.Profile != nil {
		extra = append(extra, "--pprof")
	}
	s, err := procs.StartSluice(bin, path, filepath.Join(workDir, file+".log"), opts.Drain, extra...)
	if err != nil {
		return nil, err
	}
	runErr := sample(ctx, s, pl, fn, opts, r, progress, filepath.Join(workDir, file))
	if err := s.Stop(opts.Drain + 10*time.Second); err != nil && runErr == nil {
		runErr = fmt.Errorf("stopping sluice: %w", err)
	}
	return r, runErr
}

func sample(ctx context.Context, s *procs.Sluice, pl Pipeline, fn *procs.Function, opts Opts, r *Run, progress *harness.Progress, prefix string) error {
	if err := s.WaitReady(ctx, 60*time.Second); err != nil {
		return err
	}
	// The first call, polled finely: it starts the clock.
	err := every(ctx, 10*time.Millisecond, func() (bool, error) {
		if err := s.Exited(); err != nil {
			return false, err
		}
		st, err := fn.Stats(ctx)
		if err != nil {
			return false, err
		}
		if st.Calls > r.Fn0.Calls {
			r.First = time.Now()
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	u0, err := s.Usage()
	if err != nil {
		return err
	}
	if opts.Profile != nil {
		// Owned here: cancelled and waited for before sample returns, so
		// that a profile never outlives its Sluice.
		pctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer func() { cancel(); wg.Wait() }()
		wg.Add(1)
		go func() {
			defer wg.Done()
			saveProfiles(pctx, "http://"+s.Admin, *opts.Profile, prefix, progress)
		}()
	}
	var mem *memLog
	if opts.Profile != nil && opts.Profile.Memory {
		if mem, err = newMemLog(prefix+"-mem.tsv", r.First); err != nil {
			return err
		}
		defer mem.close(progress)
	}
	var done atomic.Int64
	stop := progress.Track(opts.Label, opts.Target, done.Load)
	defer stop()
	match := map[string]string{"pipeline": pl.ID()}
	abandoned := map[string]string{"pipeline": pl.ID(), "outcome": "abandoned"}
	fnLabel := map[string]string{"function": pl.URL}
	return every(ctx, opts.Every, func() (bool, error) {
		if err := s.Exited(); err != nil {
			return false, err
		}
		m, err := s.Metrics(ctx)
		if err != nil {
			return false, err
		}
		smp := Sample{
			At:        time.Now(),
			Processed: m.Sum(MetricProcessed, match) - m.Sum(MetricProcessed, abandoned),
			Limit:     m.Sum(MetricLimit, fnLabel),
			InFlight:  m.Sum(MetricFlowIn, fnLabel),
			Waiting:   m.Sum(MetricFlowWait, fnLabel),
			Held:      m.Sum(MetricEvtInFlight, match),
		}
		if smp.Sluice, err = s.Usage(); err != nil {
			return false, err
		}
		if smp.Fn, err = fn.Stats(ctx); err != nil {
			return false, err
		}
		r.Samples = append(r.Samples, smp)
		mem.add(smp, m)
		done.Store(int64(smp.Processed))
		finished := opts.Target > 0 && smp.Processed >= float64(opts.Target)
		capped := (opts.MaxDuration > 0 && smp.At.Sub(r.First) >= opts.MaxDuration) ||
			(!opts.Until.IsZero() && !smp.At.Before(opts.Until))
		if !finished && !capped {
			return false, nil
		}
		r.End, r.Processed, r.Capped, r.Final = smp.At, smp.Processed, !finished, m
		r.CPUSeconds = smp.Sluice.CPUSeconds - u0.CPUSeconds
		r.PeakRSS = smp.Sluice.HWMBytes
		if mem != nil {
			saveEnd(ctx, "http://"+s.Admin, prefix, progress)
		}
		return true, nil
	})
}

// saveProfiles takes the profiles p asks for (concurrently: a CPU profile
// and a trace may overlap) from the Sluice admin address base, and writes
// them as prefix-cpu.pprof and prefix-trace.out.
func saveProfiles(ctx context.Context, base string, p Profile, prefix string, progress *harness.Progress) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(p.After):
	}
	var wg sync.WaitGroup
	fetch := func(what string, d time.Duration, path string) {
		defer wg.Done()
		url := fmt.Sprintf("%s/debug/pprof/%s?seconds=%d", base, what, max(int(d.Round(time.Second).Seconds()), 1))
		if err := fetchTo(ctx, url, path); err != nil {
			progress.Printf("%s not saved: %v", filepath.Base(path), err)
		}
	}
	if p.CPU > 0 {
		wg.Add(1)
		go fetch("profile", p.CPU, prefix+"-cpu.pprof")
	}
	if p.Trace > 0 {
		wg.Add(1)
		go fetch("trace", p.Trace, prefix+"-trace.out")
	}
	if p.Memory {
		if err := fetchTo(ctx, base+"/debug/pprof/heap", prefix+"-heap-after.pprof"); err != nil {
			progress.Printf("%s not saved: %v", filepath.Base(prefix)+"-heap-after.pprof", err)
		}
	}
	wg.Wait()
}

// saveEnd saves the heap profile and the goroutines of Sluice (admin
// address base) as prefix-heap-end.pprof and prefix-goroutines.txt.
func saveEnd(ctx context.Context, base, prefix string, progress *harness.Progress) {
	for what, path := range map[string]string{
		"heap":              prefix + "-heap-end.pprof",
		"goroutine?debug=1": prefix + "-goroutines.txt",
	} {
		if err := fetchTo(ctx, base+"/debug/pprof/"+what, path); err != nil {
			progress.Printf("%s not saved: %v", filepath.Base(path), err)
		}
	}
}

// fetchTo GETs url and writes the body to path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// every calls f at each interval until it returns true or an error, or
// ctx ends.
func every(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := f()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Rejected reports whether err says Sluice exited on its own (for example
// because it refused the configuration), and returns the log tail.
func Rejected(err error) (string, bool) {
	var ee *procs.ExitedError
	if errors.As(err, &ee) {
		return ee.Tail, true
	}
	return "", false
}
