// Package rmqsend holds what every synchronous RocketMQ sender in Sluice
// (the RocketMQ sink, the RocketMQ task queue) needs around the client's
// producer: the retry of a send to a topic whose route is not known yet,
// and the broker refusals the client reports only as text.
package rmqsend

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// Producer is the part of the client's producer a synchronous sender uses.
type Producer interface {
	SendSync(ctx context.Context, msgs ...*primitive.Message) (*primitive.SendResult, error)
	Shutdown() error
}

// routeRetries bounds the retries of "route info not found": the client
// looks a topic's route up on its first send, and a topic created moments
// ago may not have reached the name server's answer yet (BROKERS.md).
const routeRetries = 5

// SendSync is p.SendSync, retried briefly (100 ms doubling, 5 attempts,
// never past ctx) while the topic's route is unknown.
func SendSync(ctx context.Context, p Producer, m *primitive.Message) (*primitive.SendResult, error) {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		res, err := p.SendSync(ctx, m)
		if err == nil || attempt == routeRetries || !RouteUnknown(err) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// RouteUnknown reports the client's error for a topic whose route the name
// server does not know (not created yet, or deleted).
func RouteUnknown(err error) bool { return strings.Contains(err.Error(), "route info not found") }

// illegalRE matches the client's error for a broker response with code 13,
// MESSAGE_ILLEGAL: a body over the broker's maxMessageSize (4 MiB by
// default, counted after the client's compression), properties too long,
// an illegal topic.
var illegalRE = regexp.MustCompile(`\bCODE: 13\b`)

// Illegal reports a send the broker refused for good (MESSAGE_ILLEGAL).
func Illegal(err error) bool { return illegalRE.MatchString(err.Error()) }
