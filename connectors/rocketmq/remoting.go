package rocketmq

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/connectors/rocketmq/rmqwire"
	"github.com/sluicehq/sluice/pipelines"
)

// The source speaks a few requests of RocketMQ's remoting protocol itself
// (package rmqwire), for what the client library does not offer:
//
//   - the health probe: the topic's route from a name server, then a TCP
//     connection to each of its master brokers (the client exposes neither
//     its connection state nor its route table);
//   - CHECK_CLIENT_CONFIG for SQL92 subscriptions, which the Java client
//     sends and the Go client skips (without it a broker lacking
//     enablePropertyFilter only refuses every pull, in the client's logs);
//   - initialising a new group's offsets for start: latest (the Go client
//     cannot ask the broker not to answer "0" for a group without an
//     offset; see latestOffsets).

// ErrNoRoute is wrapped when the name servers know no route for the topic.
var ErrNoRoute = rmqwire.ErrNoRoute

// remoting adds the source's requests to an rmqwire client.
type remoting struct {
	rmqwire.Client
}

func newRemoting(acl *pipelines.RocketMQACL) remoting {
	if acl == nil {
		return remoting{}
	}
	return remoting{rmqwire.Client{Credentials: &rmqwire.Credentials{AccessKey: acl.AccessKey.Value(), SecretKey: acl.SecretKey.Value()}}}
}

// checkAuth asks a broker for the end offset of the topic's first queue,
// signed with the source's credentials (if any). A broker with ACL on
// answers NO_PERMISSION for missing or wrong credentials (or a user not
// allowed the topic): returned wrapping ErrConfig with the broker's
// reason, since the client library would only log every refused pull.
// Other answers are not this check's business; transport errors are
// returned as they are.
func (r remoting) checkAuth(ctx context.Context, broker, topic string) error {
	hdr, _, err := r.Call(ctx, broker, rmqwire.ReqGetMaxOffset, map[string]string{"topic": topic, "queueId": "0"}, nil, true)
	if err != nil {
		return err
	}
	if hdr.Code == rmqwire.ResNoPermission {
		return fmt.Errorf("%w: acl: broker %s refuses the credentials (code %d): %s", ErrConfig, broker, hdr.Code, hdr.Remark)
	}
	return nil
}

// checkSQL asks a broker whether it accepts an SQL92 subscription. A broker
// without enablePropertyFilter=true, or one that cannot compile the
// expression, answers with an error, returned wrapping ErrConfig. Transport
// errors are returned as they are.
func (r remoting) checkSQL(ctx context.Context, broker, group, topic, expr string) error {
	type subscription struct {
		Topic           string   `json:"topic"`
		SubString       string   `json:"subString"`
		ExpressionType  string   `json:"expressionType"`
		ClassFilterMode bool     `json:"classFilterMode"`
		TagsSet         []string `json:"tagsSet"`
		CodeSet         []int    `json:"codeSet"`
		SubVersion      int64    `json:"subVersion"`
	}
	body, err := json.Marshal(struct {
		ClientID         string       `json:"clientId"`
		Group            string       `json:"group"`
		SubscriptionData subscription `json:"subscriptionData"`
	}{"sluice-check", group, subscription{Topic: topic, SubString: expr, ExpressionType: "SQL92", TagsSet: []string{}, CodeSet: []int{}}})
	if err != nil {
		return err
	}
	hdr, _, err := r.Call(ctx, broker, rmqwire.ReqCheckClientConfig, map[string]string{}, body, true)
	if err != nil {
		return err
	}
	if hdr.Code != rmqwire.ResSuccess {
		hint := " (SQL92 filtering needs enablePropertyFilter=true in the broker configuration)"
		if hdr.Code == rmqwire.ResSubParseFail {
			hint = "" // the expression is at fault, not the broker
		}
		return fmt.Errorf("%w: sql: broker %s refuses the SQL92 subscription (code %d): %s%s",
			ErrConfig, broker, hdr.Code, hdr.Remark, hint)
	}
	return nil
}

// latestOffsets gives a group that has no committed offset for a queue of
// the topic the queue's current end as its offset, so that it starts
// there. The Go client cannot do this itself: asked for a group's offset,
// a broker answers 0 rather than "none" while the queue's first message is
// still in memory (its setZeroIfNotFound request field, which the client
// does not send, defaults to true), and the client then starts at 0 even
// when told to consume from the last offset. Queues with an offset are left
// alone. It returns how many queues it initialised.
func (r remoting) latestOffsets(ctx context.Context, bqs []rmqwire.BrokerQueues, group, topic string) (int, error) {
	n := 0
	for _, bq := range bqs {
		for q := range bq.Queues {
			qs := strconv.Itoa(q)
			hdr, _, err := r.Call(ctx, bq.Addr, rmqwire.ReqQueryConsumerOffset, map[string]string{
				"consumerGroup": group, "topic": topic, "queueId": qs, "bname": bq.Name, "setZeroIfNotFound": "false",
			}, nil, true)
			if err != nil {
				return n, err
			}
			switch hdr.Code {
			case rmqwire.ResSuccess:
				continue // the group has a position
			case rmqwire.ResQueryNotFound:
			default:
				return n, fmt.Errorf("offset of %s/%s/%d: code %d: %s", topic, bq.Name, q, hdr.Code, hdr.Remark)
			}
			hdr, _, err = r.Call(ctx, bq.Addr, rmqwire.ReqGetMaxOffset, map[string]string{"topic": topic, "queueId": qs, "bname": bq.Name}, nil, true)
			if err != nil {
				return n, err
			}
			if hdr.Code != rmqwire.ResSuccess {
				return n, fmt.Errorf("end of %s/%s/%d: code %d: %s", topic, bq.Name, q, hdr.Code, hdr.Remark)
			}
			end := hdr.ExtFields["offset"]
			if _, err := strconv.ParseInt(end, 10, 64); err != nil {
				return n, fmt.Errorf("end of %s/%s/%d: offset %q", topic, bq.Name, q, end)
			}
			update := map[string]string{
				"consumerGroup": group, "topic": topic, "queueId": qs, "bname": bq.Name, "commitOffset": end,
			}
			hdr, _, err = r.Call(ctx, bq.Addr, rmqwire.ReqUpdateConsumerOffset, update, nil, true)
			if err == nil && hdr.Code == rmqwire.ResGroupNotExist {
				// A group never seen: have the broker create it the way
				// it does for the first consumer, then retry.
				if err := r.register(ctx, bq.Addr, group, topic); err != nil {
					return n, err
				}
				hdr, _, err = r.Call(ctx, bq.Addr, rmqwire.ReqUpdateConsumerOffset, update, nil, true)
			}
			if err != nil {
				return n, err
			}
			if hdr.Code != rmqwire.ResSuccess {
				return n, fmt.Errorf("set offset of %s/%s/%d: code %d: %s", topic, bq.Name, q, hdr.Code, hdr.Remark)
			}
			n++
		}
	}
	return n, nil
}

// register sends one consumer heartbeat for group, from a client id of its
// own, so that a broker with autoCreateSubscriptionGroup creates the group
// as it does when a consumer first joins. The connection closes right
// after, and the broker forgets the client. Only used for a group that
// does not exist yet, so it has no members whose subscription the
// heartbeat could disturb.
func (r remoting) register(ctx context.Context, broker, group, topic string) error {
	type subscription struct {
		ClassFilterMode bool     `json:"classFilterMode"`
		Topic           string   `json:"topic"`
		SubString       string   `json:"subString"`
		TagsSet         []string `json:"tagsSet"`
		CodeSet         []int    `json:"codeSet"`
		SubVersion      int64    `json:"subVersion"`
		ExpressionType  string   `json:"expressionType"`
	}
	type consumerData struct {
		GroupName         string         `json:"groupName"`
		ConsumeType       string         `json:"consumeType"`
		MessageModel      string         `json:"messageModel"`
		ConsumeFromWhere  string         `json:"consumeFromWhere"`
		SubscriptionDatas []subscription `json:"subscriptionDataSet"`
		UnitMode          bool           `json:"unitMode"`
	}
	body, err := json.Marshal(struct {
		ClientID      string         `json:"clientID"`
		ProducerDatas []struct{}     `json:"producerDataSet"`
		ConsumerDatas []consumerData `json:"consumerDataSet"`
	}{
		ClientID:      "sluice-offset-init@" + strconv.FormatInt(time.Now().UnixNano(), 36),
		ProducerDatas: []struct{}{},
		ConsumerDatas: []consumerData{{
			GroupName: group, ConsumeType: "CONSUME_PASSIVELY", MessageModel: "CLUSTERING", ConsumeFromWhere: "CONSUME_FROM_LAST_OFFSET",
			SubscriptionDatas: []subscription{{Topic: topic, SubString: "*", TagsSet: []string{}, CodeSet: []int{}, ExpressionType: "TAG"}},
		}},
	})
	if err != nil {
		return err
	}
	hdr, _, err := r.Call(ctx, broker, rmqwire.ReqHeartbeat, map[string]string{}, body, true)
	if err != nil {
		return err
	}
	if hdr.Code != rmqwire.ResSuccess {
		return fmt.Errorf("registering group %s on %s: code %d: %s", group, broker, hdr.Code, hdr.Remark)
	}
	return nil
}
