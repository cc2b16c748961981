// Package rocketload holds the RocketMQ side of the benchmarks: B1's
// synthetic events as RocketMQ messages, topic setup (over the remoting
// protocol, package rmqwire) and pre-production, and the raw-consume
// baseline (rocketmq-client-go's push consumer, the client Sluice's
// RocketMQ source bridges). Everything here runs inside the bench process.
//
// The client library leaves goroutines running after Shutdown (see
// docs/connectors/rocketmq.md, "Quirks"); the producer and consumer started
// here are shut down, and what the library keeps running dies with the
// bench process. Every client gets its own instance name: the library
// shares one connection manager per instance name in the process.
package rocketload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/kafkaload"
	"github.com/sluicehq/sluice/bench/internal/procs"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqlog"
	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/connectors/rocketmq/rocketmqce"
)

// Message is event i of ev as a binary-mode CloudEvent of Sluice's
// RocketMQ binding: ce_ user properties for the attributes and the
// partition key, the content-type property, the key as KEYS, the JSON data
// as the body. The attributes and data are those kafkaload.Events gives
// the Kafka records and raw-http's requests.
func Message(topic string, ev kafkaload.Events, i int) *primitive.Message {
	m := primitive.NewMessage(topic, ev.Data(i))
	m.WithProperties(map[string]string{
		rocketmqce.PropertyPrefix + "specversion":                    "1.0",
		rocketmqce.PropertyPrefix + "id":                             ev.ID(i),
		rocketmqce.PropertyPrefix + "source":                         kafkaload.Source,
		rocketmqce.PropertyPrefix + "type":                           kafkaload.Type,
		rocketmqce.PropertyPrefix + rocketmqce.PartitionKeyExtension: ev.Key(i),
		rocketmqce.ContentTypeProperty:                               kafkaload.ContentType,
		primitive.PropertyUniqueClientMessageIdKeyIndex:              primitive.CreateUniqID(),
	})
	m.WithKeys([]string{ev.Key(i)})
	return m
}

// QueueOf is the index of the queue event i goes to: its key's index
// modulo the queue count, so queues get equal shares and a key lives in
// one queue, as with B1's Kafka partitions.
func QueueOf(ev kafkaload.Events, i, queues int) int { return ev.KeyIndex(i) % queues }

// Batches splits event indexes 0…n-1 of queue q (those with QueueOf == q)
// into runs of at most size, in index order: one batch is one send.
func Batches(ev kafkaload.Events, q, queues, size int) [][]int {
	var out [][]int
	var cur []int
	for i := range ev.N {
		if QueueOf(ev, i, queues) != q {
			continue
		}
		cur = append(cur, i)
		if len(cur) == size {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Remoting request codes used here besides rmqwire's (RequestCode in
// RocketMQ).
const (
	reqUpdateAndCreateTopic = 17
	reqGetBrokerClusterInfo = 106
	reqDeleteSubscriptionGr = 207
	reqDeleteTopicInBroker  = 215
	reqDeleteTopicInNamesrv = 216
)

// reBrokerAddr finds master addresses (broker id 0) in a cluster info
// body, whose map keys the name server writes unquoted.
var reBrokerAddr = regexp.MustCompile(`"brokerAddrs"\s*:\s*\{\s*"?0"?\s*:\s*"([^"]+)"`)

// BrokerAddrs lists the master brokers the name server knows.
func BrokerAddrs(ctx context.Context, nameServer string) ([]string, error) {
	hdr, body, err := rmqwire.Client{}.Call(ctx, nameServer, reqGetBrokerClusterInfo, nil, nil, false)
	if err != nil {
		return nil, fmt.Errorf("rocketmq cluster info: %w", err)
	}
	if hdr.Code != rmqwire.ResSuccess {
		return nil, fmt.Errorf("rocketmq cluster info: code %d: %s", hdr.Code, hdr.Remark)
	}
	var out []string
	for _, m := range reBrokerAddr.FindAllSubmatch(body, -1) {
		out = append(out, string(m[1]))
	}
	if len(out) == 0 {
		return nil, errors.New("rocketmq cluster info: the name server lists no master broker")
	}
	return out, nil
}

// CreateTopic creates topic with the given read and write queues on every
// master broker and waits (up to a minute) until the name server's route
// shows them.
func CreateTopic(ctx context.Context, nameServer, topic string, queues int) error {
	addrs, err := BrokerAddrs(ctx, nameServer)
	if err != nil {
		return err
	}
	ext := map[string]string{
		"topic": topic, "defaultTopic": "TBW102",
		"readQueueNums": strconv.Itoa(queues), "writeQueueNums": strconv.Itoa(queues),
		"perm": "6", "topicFilterType": "SINGLE_TAG", "topicSysFlag": "0", "order": "false",
	}
	for _, a := range addrs {
		if err := call(ctx, a, reqUpdateAndCreateTopic, ext, true); err != nil {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		qs, err := Queues(wait, nameServer, topic)
		if err == nil && len(qs) == queues*len(addrs) {
			return nil
		}
		select {
		case <-wait.Done():
			return fmt.Errorf("create topic %s: route shows %d queues (err %v), want %d", topic, len(qs), err, queues*len(addrs))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// DeleteTopic deletes a topic the bench created, on its brokers and on the
// name server (a backlog is 100 MiB of commit log per run).
func DeleteTopic(ctx context.Context, nameServer, topic string) error {
	addrs, err := BrokerAddrs(ctx, nameServer)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range addrs {
		errs = append(errs, call(ctx, a, reqDeleteTopicInBroker, map[string]string{"topic": topic}, true))
	}
	errs = append(errs, call(ctx, nameServer, reqDeleteTopicInNamesrv, map[string]string{"topic": topic}, false))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete topic %s: %w", topic, err)
	}
	return nil
}

// DeleteGroup deletes a consumer group the bench used, with its offsets,
// so that runs leave no subscription groups behind in the broker.
func DeleteGroup(ctx context.Context, nameServer, group string) error {
	addrs, err := BrokerAddrs(ctx, nameServer)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range addrs {
		errs = append(errs, call(ctx, a, reqDeleteSubscriptionGr, map[string]string{"groupName": group, "cleanOffset": "true"}, true))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete group %s: %w", group, err)
	}
	return nil
}

func call(ctx context.Context, addr string, code int, ext map[string]string, toBroker bool) error {
	hdr, _, err := rmqwire.Client{}.Call(ctx, addr, code, ext, nil, toBroker)
	if err != nil {
		return fmt.Errorf("request %d to %s: %w", code, addr, err)
	}
	if hdr.Code != rmqwire.ResSuccess {
		return fmt.Errorf("request %d to %s: code %d: %s", code, addr, hdr.Code, hdr.Remark)
	}
	return nil
}

// Queues lists topic's queues, sorted by broker name and queue id.
func Queues(ctx context.Context, nameServer, topic string) ([]primitive.MessageQueue, error) {
	bqs, err := rmqwire.Client{}.Route(ctx, []string{nameServer}, topic)
	if err != nil {
		return nil, err
	}
	var out []primitive.MessageQueue
	for _, bq := range bqs {
		for q := range bq.Queues {
			out = append(out, primitive.MessageQueue{Topic: topic, BrokerName: bq.Name, QueueId: q})
		}
	}
	return out, nil
}

// batchSize is the messages per send while producing: about 80 KiB of
// 1 KiB events, far below the broker's 4 MiB limit.
const batchSize = 64

// QuietLogs routes the client library's process-wide logging to w at Warn
// and above (it logs every rebalance and pull at Info to stderr by
// default). The first call in the process wins (rmqlog.Install).
func QuietLogs(w io.Writer) {
	rmqlog.Install(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// Produce sends ev to topic, event i to queue QueueOf(i) of the topic's
// queues (sorted by broker and id), in batches of up to 64 messages, one
// goroutine per queue, each send synchronous. It returns once every
// message was stored, or with the first error.
func Produce(ctx context.Context, nameServer, topic string, ev kafkaload.Events, progress *harness.Progress) error {
	qs, err := Queues(ctx, nameServer, topic)
	if err != nil {
		return err
	}
	p, err := rocketmq.NewProducer(
		producer.WithNsResolver(primitive.NewPassthroughResolver([]string{nameServer})),
		producer.WithGroupName("sluice-bench"),
		producer.WithInstanceName(fmt.Sprintf("sluice-bench-producer-%d-%s", os.Getpid(), topic)),
		producer.WithQueueSelector(producer.NewManualQueueSelector()),
		producer.WithRetry(2),
		producer.WithSendMsgTimeout(30*time.Second),
	)
	if err != nil {
		return fmt.Errorf("rocketmq producer: %w", err)
	}
	if err := p.Start(); err != nil {
		return fmt.Errorf("rocketmq producer: %w", err)
	}
	defer func() { _ = p.Shutdown() }()

	var sent atomic.Int64
	stop := progress.Track("produce "+topic, int64(ev.N), sent.Load)
	defer stop()
	sendCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	send := func(q int, batch []int) error {
		msgs := make([]*primitive.Message, len(batch))
		for j, i := range batch {
			msgs[j] = Message(topic, ev, i)
			msgs[j].Queue = &qs[q]
		}
		res, err := p.SendSync(sendCtx, msgs...)
		if err == nil && res.Status != primitive.SendOK {
			err = fmt.Errorf("status %d", res.Status)
		}
		if err != nil {
			return fmt.Errorf("produce to %s queue %d: %w", topic, q, err)
		}
		sent.Add(int64(len(batch)))
		return nil
	}
	batches := make([][][]int, len(qs))
	for q := range qs {
		batches[q] = Batches(ev, q, len(qs), batchSize)
	}
	// One send first, alone: the client fetches a topic's route on its
	// first send, and concurrent first sends race in that fetch (some
	// fail with "route info not found").
	if len(batches[0]) > 0 {
		if err := send(0, batches[0][0]); err != nil {
			return err
		}
		batches[0] = batches[0][1:]
	}
	errs := make([]error, len(qs))
	var wg sync.WaitGroup
	for q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, batch := range batches[q] {
				if err := send(q, batch); err != nil {
					errs[q] = err
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// RawConsume reads n messages of topic with a fresh clustering consumer
// group (push consumer, from the first offset, one message per callback as
// Sluice's source asks, the client's default pull batch of 32 and a flow
// control threshold of window messages per queue) whose callback only
// counts and returns ConsumeSuccess — nothing else: the ceiling of the
// source side. Its clock runs from the first callback to the n-th, and CPU
// is the bench process's in between. The consumer is shut down before it
// returns; the client persists its offsets then.
func RawConsume(ctx context.Context, nameServer, topic, group string, n int64, window int, label string, progress *harness.Progress) (kafkaload.Result, error) {
	c, err := rocketmq.NewPushConsumer(
		consumer.WithGroupName(group),
		consumer.WithNsResolver(primitive.NewPassthroughResolver([]string{nameServer})),
		consumer.WithInstance(fmt.Sprintf("sluice-bench-%d-%s", os.Getpid(), group)),
		consumer.WithConsumerModel(consumer.Clustering),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
		consumer.WithConsumeMessageBatchMaxSize(1),
		consumer.WithPullThresholdForQueue(int64(window)),
	)
	if err != nil {
		return kafkaload.Result{}, fmt.Errorf("%s: push consumer: %w", label, err)
	}
	var (
		count    atomic.Int64
		mu       sync.Mutex
		r        kafkaload.Result
		cpu0     float64
		finished = make(chan struct{})
	)
	err = c.Subscribe(topic, consumer.MessageSelector{Type: consumer.TAG, Expression: "*"},
		func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
			mu.Lock()
			if r.First.IsZero() {
				r.First = time.Now()
				u, _ := procs.ReadUsage(0)
				cpu0 = u.CPUSeconds
			}
			mu.Unlock()
			if before := count.Add(int64(len(msgs))) - int64(len(msgs)); before < n && before+int64(len(msgs)) >= n {
				mu.Lock()
				r.Last = time.Now()
				u, _ := procs.ReadUsage(0)
				r.CPUSeconds = u.CPUSeconds - cpu0
				mu.Unlock()
				close(finished)
			}
			return consumer.ConsumeSuccess, nil
		})
	if err != nil {
		return kafkaload.Result{}, fmt.Errorf("%s: subscribe: %w", label, err)
	}
	stop := progress.Track(label, n, count.Load)
	if err := c.Start(); err != nil {
		stop()
		return kafkaload.Result{}, fmt.Errorf("%s: start: %w", label, err)
	}
	select {
	case <-finished:
	case <-ctx.Done():
	}
	stop()
	shutErr := c.Shutdown()
	select {
	case <-finished:
	default:
		return kafkaload.Result{}, fmt.Errorf("%s: stopped after %d of %d events: %w", label, count.Load(), n, ctx.Err())
	}
	if shutErr != nil {
		return kafkaload.Result{}, fmt.Errorf("%s: shutdown: %w", label, shutErr)
	}
	mu.Lock()
	defer mu.Unlock()
	r.Events = n
	return r, nil
}
