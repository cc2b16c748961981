// Package b7 is benchmark B7: B1's pipeline (a backlog of 1 KiB binary
// CloudEvents → no-op function → ack, fixed concurrency, unbatched) with
// a RabbitMQ queue and with a RocketMQ topic as the source, each against
// that broker's own raw-consume measured in the same run (and raw-http,
// the function's ceiling, for context). See BENCHMARKS.md and
// docs/benchmarks.md.
package b7

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/httpload"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/measure"
	"github.com/sluicehq/sluice/bench/internal/procs"
	"github.com/sluicehq/sluice/bench/internal/rabbitload"
	"github.com/sluicehq/sluice/bench/internal/rocketload"
	"github.com/sluicehq/sluice/pipelines"
)

// DefaultEvents is each broker's backlog (scaled by -events).
const DefaultEvents = 100_000

// Brokers B7 knows, in the order it measures them.
const (
	RabbitMQ = "rabbitmq"
	RocketMQ = "rocketmq"
)

// knobs are B7's flags.
type knobs struct {
	brokers     string
	size        int
	keys        int
	concurrency int
	queues      int
	amqpURL     string
	nameServer  string
}

// Scenario is B7.
func Scenario() harness.Scenario {
	return harness.Scenario{
		Name:    "b7",
		Title:   "RabbitMQ and RocketMQ → no-op function → ack: events/s, CPU, RSS vs each broker's raw-consume",
		Brokers: []string{RabbitMQ, RocketMQ},
		Flags: func(fs *flag.FlagSet) harness.Run {
			k := &knobs{}
			fs.StringVar(&k.brokers, "b7.brokers", RabbitMQ+","+RocketMQ, "brokers to measure")
			fs.IntVar(&k.size, "b7.size", 1024, "bytes of data per event")
			fs.IntVar(&k.keys, "b7.keys", 1000, "distinct partition keys")
			fs.IntVar(&k.concurrency, "b7.concurrency", 32, "in-flight calls: Sluice's fixed concurrency and raw-http's workers")
			fs.IntVar(&k.queues, "b7.queues", 8, "queues of the RocketMQ topic (RabbitMQ: one queue)")
			fs.StringVar(&k.amqpURL, "b7.amqp-url", envOr("SLUICE_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL")
			fs.StringVar(&k.nameServer, "b7.namesrv", envOr("SLUICE_ROCKETMQ_NAMESRV", "127.0.0.1:9876"), "RocketMQ name server")
			return func(ctx context.Context, env *harness.Env) (*harness.Report, error) {
				return runB7(ctx, env, *k)
			}
		},
	}
}

// contender is one measured configuration in one run.
type contender struct {
	Rate       harness.Num `json:"eventsPerSecond"`
	CPUPer100k harness.Num `json:"cpuSecondsPer100k"`
	PeakRSSMiB harness.Num `json:"peakRSSMiB"`
	Seconds    harness.Num `json:"seconds"`
	// FnCPUPer100k is the function process's CPU time per 100k events
	// (NaN where the function is not called).
	FnCPUPer100k harness.Num `json:"functionCpuSecondsPer100k"`
	// BrokerCPUPer100k is the broker process's CPU time per 100k events
	// while the contender ran (NaN when its process was not found): on
	// two cores the broker competes with the contender and the function.
	BrokerCPUPer100k harness.Num `json:"brokerCpuSecondsPer100k"`
}

// run is one run of one broker: its raw-consume, raw-http and Sluice.
type run struct {
	RawConsume contender `json:"rawConsume"`
	RawHTTP    contender `json:"rawHTTP"`
	Sluice     contender `json:"sluice"`
}

// bench is what every measurement of a B7 invocation shares. It is used
// by the scenario's goroutine only.
type bench struct {
	env *harness.Env
	k   knobs
	ev  kafkaload.Events
	fn  *procs.Function
	// brokerPID is the measured broker's process (0: not found), looked
	// up again at the start of every run.
	brokerPID int
}

// runB7 starts the function and measures each broker in turn. When a
// broker fails, the report still holds the brokers (and runs) measured
// before it, beside the error.
func runB7(ctx context.Context, env *harness.Env, k knobs) (*harness.Report, error) {
	brokers := splitList(k.brokers)
	for _, b := range brokers {
		if b != RabbitMQ && b != RocketMQ {
			return nil, fmt.Errorf("b7: unknown broker %q (want %s or %s)", b, RabbitMQ, RocketMQ)
		}
	}
	rocketload.QuietLogs(env.Log)
	fn, err := procs.StartFunction(ctx, env.Function, []string{"-noop"}, filepath.Join(env.WorkDir, "function.log"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = fn.Stop(10 * time.Second) }()
	b := &bench{env: env, k: k, ev: kafkaload.Events{N: env.EventsOr(DefaultEvents), Size: k.size, Keys: k.keys}, fn: fn}
	results := map[string][]run{}
	var done []string
	for _, broker := range brokers {
		var runs []run
		switch broker {
		case RabbitMQ:
			runs, err = b.rabbit(ctx)
		case RocketMQ:
			runs, err = b.rocket(ctx)
		}
		if len(runs) > 0 {
			results[broker] = runs
			done = append(done, broker)
		}
		if err != nil {
			// What was measured so far is still reported.
			return report(env, k, b.ev, done, results), fmt.Errorf("%s: %w", broker, err)
		}
	}
	return report(env, k, b.ev, done, results), nil
}

// rabbit measures RabbitMQ. Consuming a queue empties it, so each
// contender of each run gets its own queue, filled just before it runs and
// deleted after.
func (b *bench) rabbit(ctx context.Context) ([]run, error) {
	n := int64(b.ev.N)
	amqpURL := b.k.amqpURL
	backlog := func(queue string) (func(), error) {
		drop := func() {
			if err := rabbitload.DeleteQueue(amqpURL, queue); err != nil {
				fmt.Fprintln(b.env.Log, "warning:", err)
			}
		}
		if err := rabbitload.DeclareQueue(amqpURL, queue); err != nil {
			return nil, err
		}
		if err := rabbitload.Produce(ctx, amqpURL, queue, b.ev, b.env.Progress); err != nil {
			drop()
			return nil, err
		}
		return drop, nil
	}
	return b.repeat(ctx, func(tag string) (run, error) {
		var res run
		// Found again each run: the broker may have been restarted.
		b.brokerPID = b.findBroker(rabbitPort(amqpURL))
		queue := b.env.ID + "-" + tag + "-raw"
		drop, err := backlog(queue)
		if err != nil {
			return res, err
		}
		res.RawConsume, err = b.around(func() (contender, error) {
			rc, err := rabbitload.RawConsume(ctx, amqpURL, queue, n, pipelines.DefaultWindow, "rabbitmq "+tag+" raw-consume", b.env.Progress)
			return baseline(rc), err
		})
		drop()
		if err != nil {
			return res, err
		}
		if res.RawHTTP, err = b.rawHTTP(ctx, "rabbitmq "+tag+" raw-http"); err != nil {
			return res, err
		}
		queue = b.env.ID + "-" + tag + "-sluice"
		if drop, err = backlog(queue); err != nil {
			return res, err
		}
		res.Sluice, err = b.sluice(ctx, "b7-rabbitmq", fmt.Sprintf("rabbitmq: {url: %q, queue: %s}", amqpURL, queue), "rabbitmq "+tag+" sluice")
		drop()
		if err != nil {
			return res, err
		}
		return res, nil
	})
}

// rocket measures RocketMQ. Consumers leave a topic as it was, so it is
// filled once; each contender of each run reads it with a fresh group
// from the first offset.
func (b *bench) rocket(ctx context.Context) ([]run, error) {
	n := int64(b.ev.N)
	ns, topic := b.k.nameServer, strings.ReplaceAll(b.env.ID, ".", "_")
	if err := rocketload.CreateTopic(ctx, ns, topic, b.k.queues); err != nil {
		return nil, err
	}
	defer func() {
		if err := rocketload.DeleteTopic(context.WithoutCancel(ctx), ns, topic); err != nil {
			fmt.Fprintln(b.env.Log, "warning:", err)
		}
	}()
	if err := rocketload.Produce(ctx, ns, topic, b.ev, b.env.Progress); err != nil {
		return nil, err
	}
	dropGroup := func(group string) {
		if err := rocketload.DeleteGroup(context.WithoutCancel(ctx), ns, group); err != nil {
			fmt.Fprintln(b.env.Log, "warning:", err)
		}
	}
	return b.repeat(ctx, func(tag string) (run, error) {
		var res run
		b.brokerPID = 0
		if addrs, err := rocketload.BrokerAddrs(ctx, ns); err == nil {
			b.brokerPID = b.findBroker(portOf(addrs[0], 10911))
		}
		group := topic + "-" + tag + "-raw"
		var err error
		res.RawConsume, err = b.around(func() (contender, error) {
			rc, err := rocketload.RawConsume(ctx, ns, topic, group, n, pipelines.DefaultWindow, "rocketmq "+tag+" raw-consume", b.env.Progress)
			return baseline(rc), err
		})
		dropGroup(group)
		if err != nil {
			return res, err
		}
		if res.RawHTTP, err = b.rawHTTP(ctx, "rocketmq "+tag+" raw-http"); err != nil {
			return res, err
		}
		group = topic + "-" + tag + "-sluice"
		res.Sluice, err = b.sluice(ctx, "b7-rocketmq",
			fmt.Sprintf("rocketmq: {nameServers: [%q], topic: %s, group: %s, start: earliest}", ns, topic, group),
			"rocketmq "+tag+" sluice")
		dropGroup(group)
		if err != nil {
			return res, err
		}
		return res, nil
	})
}

// attempts is how often a run is tried: the brokers are shared, and other
// people's tests restart them, which breaks the run in progress.
const attempts = 2

// repeat calls one for each of the runs (tag "r1", "r2"…; "r1-again" on a
// second attempt, so that it uses fresh queues and groups), trying a run
// that fails once more after a pause.
func (b *bench) repeat(ctx context.Context, one func(tag string) (run, error)) ([]run, error) {
	var runs []run
	for r := 1; r <= b.env.Runs; r++ {
		tag := fmt.Sprintf("r%d", r)
		res, err := one(tag)
		for a := 2; err != nil && a <= attempts && ctx.Err() == nil; a++ {
			fmt.Fprintf(b.env.Log, "warning: run %s failed, trying it again in 30 s: %v\n", tag, err)
			select {
			case <-ctx.Done():
				return runs, ctx.Err()
			case <-time.After(30 * time.Second):
			}
			tag += "-again"
			res, err = one(tag)
		}
		if err != nil {
			return runs, err
		}
		runs = append(runs, res)
	}
	return runs, nil
}

// pipeline is B7's Sluice pipeline over source: the no-op function,
// ordering none, fixed concurrency, Sluice's default window (which is the
// prefetch and per-queue window the raw-consume baselines get).
func (b *bench) pipeline(name, source string) measure.Pipeline {
	return measure.Pipeline{Name: name, Source: source, URL: b.fn.URL, Ordering: "none"}.Fixed(b.k.concurrency)
}

// sluice runs Sluice over source until it acknowledged the whole backlog.
func (b *bench) sluice(ctx context.Context, name, source, label string) (contender, error) {
	pl := b.pipeline(name, source)
	return b.around(func() (contender, error) {
		r, err := measure.Sluice(ctx, b.env.Sluice, b.env.WorkDir, pl, b.fn, measure.Opts{Target: int64(b.ev.N), Label: label}, b.env.Progress)
		if err != nil {
			return contender{}, fmt.Errorf("%s: %w", label, err)
		}
		if ok := r.Outcome(pl.ID(), "succeeded"); ok < float64(b.ev.N) {
			fmt.Fprintf(b.env.Log, "warning: %s: only %.0f of %d events succeeded\n", label, ok, b.ev.N)
		}
		return contender{
			Rate:       harness.Num(r.Rate()),
			CPUPer100k: harness.Num(r.CPUSeconds / r.Processed * 100_000),
			PeakRSSMiB: harness.Num(float64(r.PeakRSS) / (1 << 20)),
			Seconds:    harness.Num(r.End.Sub(r.First).Seconds()),
		}, nil
	})
}

// rawHTTP posts the same events to the function with the same concurrency.
func (b *bench) rawHTTP(ctx context.Context, label string) (contender, error) {
	return b.around(func() (contender, error) {
		rh, err := httpload.Run(ctx, httpload.Load{URL: b.fn.URL, Events: b.ev, Concurrency: b.k.concurrency, Label: label}, b.env.Progress)
		if err != nil {
			return contender{}, fmt.Errorf("%s: %w", label, err)
		}
		return baseline(kafkaload.Result{Events: rh.Events, First: rh.First, Last: rh.Last, CPUSeconds: rh.CPUSeconds}), nil
	})
}

// around runs f and adds the function's and the broker's CPU time while
// it ran, per 100k events.
func (b *bench) around(f func() (contender, error)) (contender, error) {
	per100k := func(s float64) harness.Num { return harness.Num(s / float64(b.ev.N) * 100_000) }
	fn0, err := b.fn.Usage()
	if err != nil {
		return contender{}, err
	}
	br0, brErr := b.brokerUsage()
	c, err := f()
	if err != nil {
		return c, err
	}
	fn1, err := b.fn.Usage()
	if err != nil {
		return c, err
	}
	c.FnCPUPer100k = per100k(fn1.CPUSeconds - fn0.CPUSeconds)
	c.BrokerCPUPer100k = harness.Num(math.NaN())
	if br1, err := b.brokerUsage(); err == nil && brErr == nil {
		c.BrokerCPUPer100k = per100k(br1.CPUSeconds - br0.CPUSeconds)
	}
	return c, nil
}

// brokerUsage reads the broker process's CPU time.
func (b *bench) brokerUsage() (procs.Usage, error) {
	if b.brokerPID == 0 {
		return procs.Usage{}, errors.New("broker process not found")
	}
	return procs.ReadUsage(b.brokerPID)
}

// findBroker returns the process listening on port (0, with a warning,
// when there is none this user can see: a remote broker, say).
func (b *bench) findBroker(port int) int {
	pid, err := listenerPID(port)
	if err != nil {
		fmt.Fprintf(b.env.Log, "warning: broker CPU not measured: %v\n", err)
		return 0
	}
	return pid
}

// rabbitPort is the port of an AMQP URL (5672, or 5671 for amqps, when
// the URL has none).
func rabbitPort(raw string) int {
	def := 5672
	u, err := url.Parse(raw)
	if err != nil {
		return def
	}
	if u.Scheme == "amqps" {
		def = 5671
	}
	if p, err := strconv.Atoi(u.Port()); err == nil {
		return p
	}
	return def
}

// portOf is the port of a host:port address, def when it has none.
func portOf(addr string, def int) int {
	if _, p, err := net.SplitHostPort(addr); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			return n
		}
	}
	return def
}

// baseline is a contender measured inside the bench process.
func baseline(r kafkaload.Result) contender {
	return contender{Rate: harness.Num(r.Rate()), CPUPer100k: harness.Num(r.CPUSeconds / float64(r.Events) * 100_000),
		PeakRSSMiB: harness.Num(math.NaN()), Seconds: harness.Num(r.Last.Sub(r.First).Seconds())}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.ToLower(strings.TrimSpace(p)); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
