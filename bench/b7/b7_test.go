package b7

import (
	"math"
	"net"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/procs"
	"github.com/sluicehq/sluice/pipelines"
)

// rocketload links the RocketMQ client, which starts a cache janitor from
// a package variable at init; it lives as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/patrickmn/go-cache.(*janitor).Run"))
}

// The pipelines B7 writes must be what `sluice run` accepts: the broker's
// source where B7 meant it, ordering none, the fixed concurrency, and the
// default window the raw-consume baselines copy.
func TestPipelinesLoad(t *testing.T) {
	b := &bench{k: knobs{concurrency: 32}, fn: &procs.Function{URL: "http://127.0.0.1:8080/"}}
	tests := []struct {
		name, source string
		check        func(t *testing.T, src pipelines.SourceSpec)
	}{
		{"b7-rabbitmq", `rabbitmq: {url: "amqp://guest:guest@127.0.0.1:5672/", queue: q1}`, func(t *testing.T, src pipelines.SourceSpec) {
			if r := src.RabbitMQ; r == nil || r.Queue != "q1" || r.URL.Value() != "amqp://guest:guest@127.0.0.1:5672/" {
				t.Errorf("rabbitmq source = %+v", r)
			}
		}},
		{"b7-rocketmq", `rocketmq: {nameServers: ["127.0.0.1:9876"], topic: t1, group: g1, start: earliest}`, func(t *testing.T, src pipelines.SourceSpec) {
			if r := src.RocketMQ; r == nil || r.Topic != "t1" || r.Group != "g1" || r.Start != "earliest" ||
				len(r.NameServers) != 1 || r.NameServers[0] != "127.0.0.1:9876" {
				t.Errorf("rocketmq source = %+v", r)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := b.pipeline(tt.name, tt.source)
			path, err := pl.Write(t.TempDir(), "p.yaml")
			if err != nil {
				t.Fatal(err)
			}
			ps, err := pipelines.LoadPaths(path)
			if err != nil {
				t.Fatalf("load: %v\n%s", err, pl.YAML())
			}
			if len(ps) != 1 {
				t.Fatalf("%d pipelines, want 1", len(ps))
			}
			p := ps[0]
			if p.Spec.Source.Kafka != nil {
				t.Errorf("a Kafka source was rendered too:\n%s", pl.YAML())
			}
			tt.check(t, p.Spec.Source)
			d := p.Spec.Delivery
			if d.Ordering != "none" || d.Concurrency.Initial != 32 || d.Concurrency.Min != 32 || d.Concurrency.Max != 32 {
				t.Errorf("delivery = %+v, want ordering none at a fixed 32", d)
			}
			if d.Window != pipelines.DefaultWindow {
				t.Errorf("window = %d, want the default %d (the baselines' prefetch)", d.Window, pipelines.DefaultWindow)
			}
			if p.Spec.Function.URL != b.fn.URL || p.Spec.Function.Mode != "binary" {
				t.Errorf("function = %+v", p.Spec.Function)
			}
		})
	}
}

func runOf(raw, http, sluice float64) run {
	return run{RawConsume: contender{Rate: harness.Num(raw)}, RawHTTP: contender{Rate: harness.Num(http)},
		Sluice: contender{Rate: harness.Num(sluice), CPUPer100k: 5, PeakRSSMiB: 40}}
}

func TestSummarize(t *testing.T) {
	// Run 2's raw-http is below its raw-consume; runs 1 and 3 are bound by
	// the broker. Ratios are per run, then the median.
	s := summarize(RabbitMQ, []run{runOf(20000, 25000, 15000), runOf(30000, 16000, 12000), runOf(10000, 20000, 6000)})
	if s.Runs != 3 || s.FunctionBound != 1 || s.functionBound() {
		t.Errorf("runs %d, function-bound runs %d (%v); want 3, 1, false", s.Runs, s.FunctionBound, s.functionBound())
	}
	want := []float64{0.75, 0.4, 0.6}
	for i, w := range want {
		if got := float64(s.RatiosToRaw[i]); math.Abs(got-w) > 1e-9 {
			t.Errorf("run %d: ratio to raw-consume %v, want %v", i+1, got, w)
		}
	}
	if got := float64(s.RatioToRaw); math.Abs(got-0.6) > 1e-9 {
		t.Errorf("median ratio to raw-consume %v, want 0.6", got)
	}
	// min(raw-consume, raw-http): 20000, 16000, 10000 → 0.75, 0.75, 0.6.
	if got := float64(s.RatioToMin); math.Abs(got-0.75) > 1e-9 {
		t.Errorf("median ratio to min %v, want 0.75", got)
	}
	if float64(s.Rate) != 12000 || float64(s.RawConsume) != 20000 || float64(s.RawHTTP) != 20000 {
		t.Errorf("medians %v %v %v", s.Rate, s.RawConsume, s.RawHTTP)
	}
	if b := s.bar(); b.Status != harness.Missed || b.Got != "0.60" {
		t.Errorf("bar = %+v, want missed at 0.60", b)
	}
	if n := s.note(); !strings.Contains(n, "broker is the lower ceiling") || !strings.Contains(n, "2 of 3") {
		t.Errorf("note = %q", n)
	}

	s = summarize(RocketMQ, []run{runOf(40000, 16000, 12000), runOf(40000, 15000, 13000)})
	if !s.functionBound() || s.bar().Status != harness.Missed {
		t.Errorf("function-bound %v, bar %+v", s.functionBound(), s.bar())
	}
	if n := s.note(); !strings.Contains(n, "function, not the broker") || !strings.Contains(n, "min(raw-consume, raw-http) = 0.81") {
		t.Errorf("note = %q", n)
	}
	if s = summarize(RocketMQ, []run{runOf(10000, 16000, 7000)}); s.bar().Status != harness.Met {
		t.Errorf("0.70 must meet the bar: %+v", s.bar())
	}
}

func TestReportTables(t *testing.T) {
	env := &harness.Env{Runs: 2}
	k := knobs{concurrency: 32, queues: 8}
	ev := kafkaload.Events{N: 1000, Size: 1024, Keys: 10}
	rep := report(env, k, ev, []string{RabbitMQ, RocketMQ}, map[string][]run{
		RabbitMQ: {runOf(20000, 15000, 12000), runOf(22000, 16000, 11000)},
		RocketMQ: {runOf(8000, 15000, 7000), runOf(9000, 16000, 6000)},
	})
	if len(rep.Tables) != 2 || len(rep.Bars) != 2 {
		t.Fatalf("%d tables, %d bars; want 2 and 2", len(rep.Tables), len(rep.Bars))
	}
	if !strings.Contains(rep.Tables[1].Title, "8 queues") || !strings.Contains(rep.Tables[0].Title, "1 queue") {
		t.Errorf("titles %q / %q", rep.Tables[0].Title, rep.Tables[1].Title)
	}
	row := rep.Tables[0].Rows[2]
	// Sluice ÷ raw-consume per run: 0.6, 0.5 → median 0.55.
	if row[6] != "0.55 (0.50–0.60)" {
		t.Errorf("rabbitmq ÷ raw-consume cell %q", row[5])
	}
	if rep.Bars[1].Status != harness.Met || rep.Bars[0].Status != harness.Missed {
		t.Errorf("bars %+v", rep.Bars)
	}
	var sb strings.Builder
	rep.Render(&sb)
	if !strings.Contains(sb.String(), "B7 rocketmq: events/s ÷ raw-consume") {
		t.Errorf("rendered report lacks the RocketMQ bar:\n%s", sb.String())
	}
}

// The broker's process is found by its listening port; this test process
// listens on one.
func TestListenerPID(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pid, err := listenerPID(l.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Errorf("pid %d, want this process %d", pid, os.Getpid())
	}
	l.Close()
	if _, err := listenerPID(l.Addr().(*net.TCPAddr).Port); err == nil {
		t.Error("a closed port still has a listener")
	}
}

func TestPorts(t *testing.T) {
	for in, want := range map[string]int{
		"amqp://guest:guest@127.0.0.1:5672/": 5672, "amqp://h:5999/v": 5999, "amqp://h/": 5672, "amqps://h/": 5671,
	} {
		if got := rabbitPort(in); got != want {
			t.Errorf("rabbitPort(%q) = %d, want %d", in, got, want)
		}
	}
	if portOf("127.0.0.1:10911", 1) != 10911 || portOf("broker", 10911) != 10911 {
		t.Error("portOf")
	}
}
