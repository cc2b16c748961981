package rocketq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
)

// admin speaks the remoting requests the queue needs and the Go client
// does not offer (topic and group administration, offsets), through
// rmqwire: one short-lived connection per request, no goroutine left
// behind. Immutable; safe for concurrent use.
type admin struct {
	wire        rmqwire.Client
	nameServers []string
}

// Request and response codes (RequestCode / ResponseCode in RocketMQ)
// beyond those rmqwire names.
const (
	reqUpdateCreateTopic      = 17
	reqGetBrokerRuntimeInfo   = 28
	reqGetMinOffset           = 31
	reqGetClusterInfo         = 106
	reqUpdateCreateGroup      = 200
	reqGetAllTopicsFromNamesv = 206
	reqDeleteGroup            = 207
	reqDeleteTopicInBroker    = 215
	reqDeleteTopicInNamesrv   = 216
)

// intKeyRE finds the unquoted integer map keys name servers write (their
// fastjson serialises broker id maps that way), which encoding/json
// refuses.
var intKeyRE = regexp.MustCompile(`([{,])(\d+):`)

// masters lists the address of every master broker the name servers know
// (the first name server that answers decides).
func (a admin) masters(ctx context.Context) ([]string, error) {
	var errs []error
	for _, ns := range a.nameServers {
		hdr, body, err := a.wire.Call(ctx, ns, reqGetClusterInfo, nil, nil, false)
		if err == nil && hdr.Code != rmqwire.ResSuccess {
			err = fmt.Errorf("code %d: %s", hdr.Code, hdr.Remark)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster info from %s: %w", ns, err))
			continue
		}
		var info struct {
			BrokerAddrTable map[string]struct {
				BrokerAddrs map[string]string `json:"brokerAddrs"`
			} `json:"brokerAddrTable"`
		}
		if err := json.Unmarshal(intKeyRE.ReplaceAll(body, []byte(`$1"$2":`)), &info); err != nil {
			return nil, fmt.Errorf("cluster info from %s: %w", ns, err)
		}
		var addrs []string
		for _, b := range info.BrokerAddrTable {
			if addr := b.BrokerAddrs["0"]; addr != "" {
				addrs = append(addrs, addr)
			}
		}
		sort.Strings(addrs)
		if len(addrs) == 0 {
			return nil, fmt.Errorf("name server %s lists no master broker", ns)
		}
		return addrs, nil
	}
	return nil, errors.Join(errs...)
}

// route is the topic's master brokers and queues; (nil, nil) when the
// topic has no route (never created, or deleted).
func (a admin) route(ctx context.Context, topic string) ([]rmqwire.BrokerQueues, error) {
	bqs, err := a.wire.Route(ctx, a.nameServers, topic)
	if errors.Is(err, rmqwire.ErrNoRoute) {
		return nil, nil
	}
	return bqs, err
}

// broker sends one request to a broker and fails unless it answers with
// one of ok (success when empty).
func (a admin) broker(ctx context.Context, addr string, code int, ext map[string]string, body []byte, ok ...int) error {
	hdr, _, err := a.wire.Call(ctx, addr, code, ext, body, true)
	if err != nil {
		return fmt.Errorf("broker %s: %w", addr, err)
	}
	if hdr.Code == rmqwire.ResSuccess {
		return nil
	}
	for _, c := range ok {
		if hdr.Code == c {
			return nil
		}
	}
	return fmt.Errorf("broker %s: request %d: code %d: %s", addr, code, hdr.Code, hdr.Remark)
}

// createTopic creates topic with queues read and write queues on every
// master broker (UPDATE_AND_CREATE_TOPIC, what `mqadmin updateTopic`
// sends).
func (a admin) createTopic(ctx context.Context, topic string, queues int) error {
	addrs, err := a.masters(ctx)
	if err != nil {
		return err
	}
	n := strconv.Itoa(queues)
	for _, addr := range addrs {
		if err := a.broker(ctx, addr, reqUpdateCreateTopic, map[string]string{
			"topic": topic, "defaultTopic": "TBW102", "readQueueNums": n, "writeQueueNums": n,
			"perm": "6", "topicFilterType": "SINGLE_TAG", "topicSysFlag": "0", "order": "false",
		}, nil); err != nil {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	return nil
}

// createGroup creates (or updates) the consumer group on every master
// broker (UPDATE_AND_CREATE_SUBSCRIPTIONGROUP), so that brokers without
// autoCreateSubscriptionGroup accept the readers.
func (a admin) createGroup(ctx context.Context, group string) error {
	addrs, err := a.masters(ctx)
	if err != nil {
		return err
	}
	config, err := json.Marshal(map[string]any{
		"groupName": group, "consumeEnable": true, "consumeFromMinEnable": true, "consumeBroadcastEnable": true,
		"retryQueueNums": 1, "retryMaxTimes": 16, "brokerId": 0, "whichBrokerWhenConsumeSlowly": 1,
		"notifyConsumerIdsChangedEnable": true,
	})
	if err != nil {
		return err
	}
	for _, addr := range addrs {
		if err := a.broker(ctx, addr, reqUpdateCreateGroup, map[string]string{}, config); err != nil {
			return fmt.Errorf("create group %s: %w", group, err)
		}
	}
	return nil
}

// deleteTopic deletes the consumer group and the topics on every master
// broker, then on the name servers. Missing ones are not errors.
func (a admin) deleteTopic(ctx context.Context, group string, topics ...string) error {
	addrs, err := a.masters(ctx)
	if err != nil {
		return err
	}
	for _, addr := range addrs {
		if err := a.broker(ctx, addr, reqDeleteGroup, map[string]string{"groupName": group, "cleanOffset": "true"}, nil,
			rmqwire.ResGroupNotExist); err != nil {
			return fmt.Errorf("delete group %s: %w", group, err)
		}
		for _, t := range topics {
			if err := a.broker(ctx, addr, reqDeleteTopicInBroker, map[string]string{"topic": t}, nil,
				rmqwire.ResTopicNotExist); err != nil {
				return fmt.Errorf("delete topic %s: %w", t, err)
			}
		}
	}
	for _, ns := range a.nameServers {
		for _, t := range topics {
			hdr, _, err := a.wire.Call(ctx, ns, reqDeleteTopicInNamesrv, map[string]string{"topic": t}, nil, false)
			if err == nil && hdr.Code != rmqwire.ResSuccess && hdr.Code != rmqwire.ResTopicNotExist {
				err = fmt.Errorf("code %d: %s", hdr.Code, hdr.Remark)
			}
			if err != nil {
				return fmt.Errorf("delete topic %s on name server %s: %w", t, ns, err)
			}
		}
	}
	return nil
}

// topics lists every topic a name server knows (the first that answers).
func (a admin) topics(ctx context.Context) ([]string, error) {
	var errs []error
	for _, ns := range a.nameServers {
		hdr, body, err := a.wire.Call(ctx, ns, reqGetAllTopicsFromNamesv, nil, nil, false)
		if err == nil && hdr.Code != rmqwire.ResSuccess {
			err = fmt.Errorf("code %d: %s", hdr.Code, hdr.Remark)
		}
		if err == nil {
			var list struct {
				TopicList []string `json:"topicList"`
			}
			if err = json.Unmarshal(body, &list); err == nil {
				return list.TopicList, nil
			}
		}
		errs = append(errs, fmt.Errorf("topic list from %s: %w", ns, err))
	}
	return nil, errors.Join(errs...)
}

// lag is the number of messages of topic past group's committed offsets,
// summed over the topic's queues; where the group committed nothing, it
// counts from the queue's earliest stored message (the queue's readers
// start there). A topic without a route has none. Each broker is first
// settled (see settle) unless settled already holds it; lag adds it.
func (a admin) lag(ctx context.Context, topic, group string, settled map[string]bool) (int64, error) {
	bqs, err := a.route(ctx, topic)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, bq := range bqs {
		if !settled[bq.Addr] {
			if err := a.settle(ctx, bq.Addr); err != nil {
				return 0, err
			}
			settled[bq.Addr] = true
		}
		for id := range bq.Queues {
			qid := strconv.Itoa(id)
			end, err := a.offset(ctx, bq.Addr, rmqwire.ReqGetMaxOffset, map[string]string{"topic": topic, "queueId": qid, "bname": bq.Name})
			if err != nil {
				return 0, fmt.Errorf("end of %s/%s/%d: %w", topic, bq.Name, id, err)
			}
			pos, err := a.offset(ctx, bq.Addr, rmqwire.ReqQueryConsumerOffset, map[string]string{
				"consumerGroup": group, "topic": topic, "queueId": qid, "bname": bq.Name, "setZeroIfNotFound": "false",
			})
			if errors.Is(err, errNoOffset) {
				pos, err = a.offset(ctx, bq.Addr, reqGetMinOffset, map[string]string{"topic": topic, "queueId": qid, "bname": bq.Name})
			}
			if err != nil {
				return 0, fmt.Errorf("position of %s in %s/%s/%d: %w", group, topic, bq.Name, id, err)
			}
			total += max(end-pos, 0)
		}
	}
	return total, nil
}

// errNoOffset: the group has no committed offset for the queue.
var errNoOffset = errors.New("no committed offset")

// offset sends an offset request and reads the "offset" field of the answer.
func (a admin) offset(ctx context.Context, addr string, code int, ext map[string]string) (int64, error) {
	hdr, _, err := a.wire.Call(ctx, addr, code, ext, nil, true)
	if err != nil {
		return 0, err
	}
	switch hdr.Code {
	case rmqwire.ResSuccess:
	case rmqwire.ResQueryNotFound:
		return 0, errNoOffset
	default:
		return 0, fmt.Errorf("code %d: %s", hdr.Code, hdr.Remark)
	}
	v, err := strconv.ParseInt(hdr.ExtFields["offset"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("offset %q in the answer", hdr.ExtFields["offset"])
	}
	return v, nil
}

// settleWait bounds settle: a broker's index normally trails its commit log
// by milliseconds.
const settleWait = 10 * time.Second

// settle waits until the broker has indexed (dispatched to its consume
// queues) everything its commit log held when settle began. A message is
// SEND_OK once it is in the commit log, but a queue's max offset counts it
// only once the broker's dispatcher indexed it: without this, a Depth
// right after a Publish could miss the message, and DeleteQueue delete a
// queue that is not empty. It compares the commit log's end at the start
// with the dispatcher's position (end minus dispatchBehindBytes, from
// GET_BROKER_RUNTIME_INFO), so it ends under a steady stream of writes too.
func (a admin) settle(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, settleWait)
	defer cancel()
	target := int64(-1)
	for {
		end, behind, err := a.dispatch(ctx, addr)
		if err != nil {
			return fmt.Errorf("broker %s: runtime info: %w", addr, err)
		}
		if target < 0 {
			target = end
		}
		if end-behind >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("broker %s: its index trails its commit log by %d bytes: %w", addr, target-(end-behind), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// dispatch reads the broker's commit log end and how far its dispatcher
// trails it, in bytes.
func (a admin) dispatch(ctx context.Context, addr string) (end, behind int64, err error) {
	hdr, body, err := a.wire.Call(ctx, addr, reqGetBrokerRuntimeInfo, nil, nil, true)
	if err != nil {
		return 0, 0, err
	}
	if hdr.Code != rmqwire.ResSuccess {
		return 0, 0, fmt.Errorf("code %d: %s", hdr.Code, hdr.Remark)
	}
	var info struct {
		Table map[string]string `json:"table"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return 0, 0, err
	}
	end, err = strconv.ParseInt(info.Table["commitLogMaxOffset"], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("commitLogMaxOffset %q", info.Table["commitLogMaxOffset"])
	}
	behind, err = strconv.ParseInt(info.Table["dispatchBehindBytes"], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("dispatchBehindBytes %q", info.Table["dispatchBehindBytes"])
	}
	return end, behind, nil
}
