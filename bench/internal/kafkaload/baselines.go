package kafkaload

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/procs"
	"github.com/sluicehq/sluice/connectors/kafka/kafkace"
)

// Result is one baseline measurement: N events handled between First (the
// first record received) and Last (the last one marked), so that group
// join time is left out as it is for Sluice.
type Result struct {
	Events      int64
	First, Last time.Time
	// CPUSeconds is what the bench process spent between First and Last
	// (the baseline runs inside it; its pollers are idle meanwhile).
	CPUSeconds float64
}

// Rate is events per second.
func (r Result) Rate() float64 {
	d := r.Last.Sub(r.First).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(r.Events) / d
}

// RawConsume reads n records of topic with a fresh consumer group and marks
// each one (sarama's auto-commit commits them): the ceiling of the source
// side. It stops after the n-th record.
func RawConsume(ctx context.Context, brokers []string, topic, group string, n int64, label string, progress *harness.Progress) (Result, error) {
	return consume(ctx, brokers, topic, group, n, label, progress,
		func(context.Context, *sarama.ConsumerMessage) bool { return true })
}

// NaiveBridge is what a team writes by hand: a consumer group whose
// per-partition goroutine (sarama's ConsumeClaim) posts each record to url
// as a binary CloudEvent with net/http, one at a time, and marks its offset
// after a 2xx (retrying every 100 ms otherwise). Its HTTP client keeps as
// many idle connections as there can be partitions, so that it pays no
// connection churn (net/http's default keeps only 2 per host).
func NaiveBridge(ctx context.Context, brokers []string, topic, group, url string, n int64, label string, progress *harness.Progress) (Result, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return consume(ctx, brokers, topic, group, n, label, progress,
		func(ctx context.Context, m *sarama.ConsumerMessage) bool {
			for {
				if err := post(ctx, client, url, m); err == nil {
					return true
				}
				select {
				case <-ctx.Done():
					return false
				case <-time.After(100 * time.Millisecond):
				}
			}
		})
}

// post sends one record as a binary-mode CloudEvent: ce_X headers become
// ce-X, content-type stays, the value is the body.
func post(ctx context.Context, client *http.Client, url string, m *sarama.ConsumerMessage) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(m.Value))
	if err != nil {
		return err
	}
	for _, h := range m.Headers {
		k := string(h.Key)
		switch {
		case strings.HasPrefix(k, kafkace.HeaderPrefix):
			req.Header.Set("ce-"+k[len(kafkace.HeaderPrefix):], string(h.Value))
		case k == kafkace.ContentTypeHeader:
			req.Header.Set("Content-Type", string(h.Value))
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("function answered %s", resp.Status)
	}
	return nil
}

// consume runs a consumer group over topic until n records were handled
// and marked. handle returns false when it gave up because ctx ended.
// label names the run in progress output and errors.
func consume(ctx context.Context, brokers []string, topic, group string, n int64, label string,
	progress *harness.Progress, handle func(context.Context, *sarama.ConsumerMessage) bool) (Result, error) {
	cfg := config("sluice-bench")
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	g, err := sarama.NewConsumerGroup(brokers, group, cfg)
	if err != nil {
		return Result{}, fmt.Errorf("%s: consumer group: %w", label, err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := &groupHandler{n: n, handle: handle, done: cancel}
	stop := progress.Track(label, n, h.count.Load)
	var consumeErr error
	for runCtx.Err() == nil {
		if err := g.Consume(runCtx, []string{topic}, h); err != nil && runCtx.Err() == nil {
			consumeErr = fmt.Errorf("%s: consume: %w", label, err)
			break
		}
	}
	stop()
	// Close commits what was marked.
	closeErr := g.Close()
	if consumeErr != nil {
		return Result{}, consumeErr
	}
	if h.count.Load() < n {
		return Result{}, fmt.Errorf("%s: stopped after %d of %d events: %w", label, h.count.Load(), n, ctx.Err())
	}
	if closeErr != nil {
		return Result{}, fmt.Errorf("%s: close: %w", label, closeErr)
	}
	return h.result(), nil
}

// groupHandler counts handled records across partitions. sarama calls
// ConsumeClaim on one goroutine per claimed partition.
type groupHandler struct {
	n      int64
	handle func(context.Context, *sarama.ConsumerMessage) bool
	done   context.CancelFunc

	count   atomic.Int64
	started atomic.Bool
	mu      sync.Mutex
	first   time.Time
	last    time.Time
	cpu0    float64
	cpu1    float64
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	ctx := sess.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if h.started.CompareAndSwap(false, true) {
				u, _ := procs.ReadUsage(0)
				h.mu.Lock()
				h.first, h.cpu0 = time.Now(), u.CPUSeconds
				h.mu.Unlock()
			}
			if !h.handle(ctx, m) {
				return nil
			}
			sess.MarkMessage(m, "")
			if h.count.Add(1) == h.n {
				u, _ := procs.ReadUsage(0)
				h.mu.Lock()
				h.last, h.cpu1 = time.Now(), u.CPUSeconds
				h.mu.Unlock()
				h.done()
				return nil
			}
		}
	}
}

func (h *groupHandler) result() Result {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Result{Events: h.n, First: h.first, Last: h.last, CPUSeconds: h.cpu1 - h.cpu0}
}
