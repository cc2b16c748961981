// Package rmqwire speaks a few requests of RocketMQ's remoting protocol
// (JSON header serialisation) on short-lived connections: what Sluice needs
// and the client library (github.com/apache/rocketmq-client-go/v2) does not
// offer, and what tests use to send and read messages without starting a
// client (whose background goroutines outlive Shutdown).
//
// Requests to brokers are signed like the client signs them when ACL
// credentials are given; name servers do not check them. Every function is
// safe for concurrent use and leaves no goroutine behind.
package rmqwire

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// ErrNoRoute is wrapped when the name servers answer but know no route for
// the topic (it was never created, or every broker holding it is gone).
var ErrNoRoute = errors.New("no route for the topic")

// Request and response codes (RequestCode / ResponseCode in RocketMQ).
const (
	ReqSendMessage          = 10
	ReqPullMessage          = 11
	ReqQueryConsumerOffset  = 14
	ReqUpdateConsumerOffset = 15
	ReqGetMaxOffset         = 30
	ReqHeartbeat            = 34
	ReqCheckClientConfig    = 46
	ReqGetRouteInfoByTopic  = 105

	ResSuccess       = 0
	ResNoPermission  = 16 // ACL: unknown user, bad signature, or not allowed
	ResTopicNotExist = 17
	ResPullNotFound  = 19
	ResPullRetry     = 20
	ResOffsetMoved   = 21
	ResQueryNotFound = 22
	ResSubParseFail  = 23 // SUBSCRIPTION_PARSE_FAILED: an expression the broker cannot parse
	ResGroupNotExist = 26

	remotingVersion = 317 // protocol version the Go client sends (V4_9_4)
)

// Header is a remoting command header.
type Header struct {
	Code      int               `json:"code"`
	Language  string            `json:"language,omitempty"`
	Version   int               `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int               `json:"flag"`
	Remark    string            `json:"remark,omitempty"`
	ExtFields map[string]string `json:"extFields,omitempty"`
}

// Credentials are RocketMQ ACL keys.
type Credentials struct {
	AccessKey, SecretKey string
}

// Client sends requests; Credentials (nil: none) sign requests to brokers.
type Client struct {
	Credentials *Credentials
}

// BrokerQueues is one broker's share of a topic.
type BrokerQueues struct {
	Name   string
	Addr   string // master
	Queues int    // read queues
}

// intKeyRE finds the unquoted integer map keys name servers write (their
// fastjson serialises the broker id map that way), which encoding/json
// refuses.
var intKeyRE = regexp.MustCompile(`([{,])(\d+):`)

// Route asks the name servers, in order, for topic's route. Errors from
// every name server are joined.
func (r Client) Route(ctx context.Context, nameServers []string, topic string) ([]BrokerQueues, error) {
	var errs []error
	for _, ns := range nameServers {
		bqs, err := r.routeFrom(ctx, ns, topic)
		if err == nil {
			return bqs, nil
		}
		errs = append(errs, fmt.Errorf("name server %s: %w", ns, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (r Client) routeFrom(ctx context.Context, nameServer, topic string) ([]BrokerQueues, error) {
	hdr, body, err := r.Call(ctx, nameServer, ReqGetRouteInfoByTopic, map[string]string{"topic": topic}, nil, false)
	if err != nil {
		return nil, err
	}
	switch hdr.Code {
	case ResSuccess:
	case ResTopicNotExist:
		return nil, fmt.Errorf("%w %s", ErrNoRoute, topic)
	default:
		return nil, fmt.Errorf("route of %s: code %d: %s", topic, hdr.Code, hdr.Remark)
	}
	return parseRoute(topic, body)
}

func parseRoute(topic string, body []byte) ([]BrokerQueues, error) {
	var route struct {
		BrokerDatas []struct {
			BrokerName  string            `json:"brokerName"`
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerDatas"`
		QueueDatas []struct {
			BrokerName    string `json:"brokerName"`
			ReadQueueNums int    `json:"readQueueNums"`
		} `json:"queueDatas"`
	}
	if err := json.Unmarshal(intKeyRE.ReplaceAll(body, []byte(`$1"$2":`)), &route); err != nil {
		return nil, fmt.Errorf("route of %s: %w", topic, err)
	}
	masters := map[string]string{}
	for _, bd := range route.BrokerDatas {
		if a := bd.BrokerAddrs["0"]; a != "" {
			masters[bd.BrokerName] = a
		}
	}
	var out []BrokerQueues
	for _, qd := range route.QueueDatas {
		if a, ok := masters[qd.BrokerName]; ok && qd.ReadQueueNums > 0 {
			out = append(out, BrokerQueues{Name: qd.BrokerName, Addr: a, Queues: qd.ReadQueueNums})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w %s: no master broker with read queues", ErrNoRoute, topic)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Call sends one request on a fresh connection and reads the response; ctx
// bounds the whole exchange. toBroker requests are signed when credentials
// are configured.
func (r Client) Call(ctx context.Context, addr string, code int, ext map[string]string, body []byte, toBroker bool) (Header, []byte, error) {
	var resp Header
	if toBroker && r.Credentials != nil {
		ext = sign(ext, body, r.Credentials.AccessKey, r.Credentials.SecretKey)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return resp, nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	const opaque = 1
	hdr, err := json.Marshal(Header{Code: code, Language: "GO", Version: remotingVersion, Opaque: opaque, ExtFields: ext})
	if err != nil {
		return resp, nil, err
	}
	// Frame: total length, then serialisation type (0 = JSON) and header
	// length in one big-endian word, then header and body.
	frame := binary.BigEndian.AppendUint32(nil, uint32(4+len(hdr)+len(body)))
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(hdr)))
	frame = append(frame, hdr...)
	frame = append(frame, body...)
	if _, err := c.Write(frame); err != nil {
		return resp, nil, err
	}
	// Brokers may send requests of their own on the connection (a
	// heartbeat triggers NOTIFY_CONSUMER_IDS_CHANGED): skip them.
	for {
		hdr, body, err := readFrame(c)
		if err != nil {
			return resp, nil, err
		}
		if hdr.Flag&1 == 1 && hdr.Opaque == opaque {
			return hdr, body, nil
		}
	}
}

// readFrame reads one remoting frame.
func readFrame(c io.Reader) (Header, []byte, error) {
	var hdr Header
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return hdr, nil, fmt.Errorf("reading response: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size < 4 || size > 16<<20 {
		return hdr, nil, fmt.Errorf("not a RocketMQ remoting frame (length %d)", size)
	}
	in := make([]byte, size)
	if _, err := io.ReadFull(c, in); err != nil {
		return hdr, nil, fmt.Errorf("reading response: %w", err)
	}
	mark := binary.BigEndian.Uint32(in)
	hl := mark & 0xFFFFFF
	if mark>>24 != 0 || 4+hl > size {
		return hdr, nil, fmt.Errorf("unexpected response header (serialisation %d, length %d)", mark>>24, hl)
	}
	if err := json.Unmarshal(in[4:4+hl], &hdr); err != nil {
		return hdr, nil, fmt.Errorf("decoding response header: %w", err)
	}
	return hdr, in[4+hl:], nil
}

// sign adds RocketMQ ACL fields: AccessKey, and Signature = base64
// HMAC-SHA1 over the values of all fields (AccessKey included) in key
// order, followed by the body; what the client's ACL interceptor does.
func sign(ext map[string]string, body []byte, accessKey, secretKey string) map[string]string {
	out := make(map[string]string, len(ext)+2)
	for k, v := range ext {
		out[k] = v
	}
	out["AccessKey"] = accessKey
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(out[k])
	}
	mac := hmac.New(sha1.New, []byte(secretKey))
	mac.Write([]byte(b.String()))
	mac.Write(body)
	out["Signature"] = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return out
}

// DialAll checks that every broker accepts a TCP connection.
func DialAll(ctx context.Context, bqs []BrokerQueues) error {
	var errs []error
	for _, bq := range bqs {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", bq.Addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("broker %s (%s): %w", bq.Name, bq.Addr, err))
			continue
		}
		_ = c.Close()
	}
	return errors.Join(errs...)
}

// Pull reads up to max messages of one queue from offset, without waiting
// for new ones, subscribing to everything (group is the consumer group the
// broker attributes the pull to; it commits nothing). It returns the
// messages and the offset to pull next; no messages (and no error) when
// there is nothing at offset yet.
func (r Client) Pull(ctx context.Context, broker, group, topic string, queue int, offset int64, max int) ([]*primitive.MessageExt, int64, error) {
	const sysFlagSubscription = 1 << 2
	hdr, body, err := r.Call(ctx, broker, ReqPullMessage, map[string]string{
		"consumerGroup":        group,
		"topic":                topic,
		"queueId":              strconv.Itoa(queue),
		"queueOffset":          strconv.FormatInt(offset, 10),
		"maxMsgNums":           strconv.Itoa(max),
		"sysFlag":              strconv.Itoa(sysFlagSubscription),
		"commitOffset":         "0",
		"suspendTimeoutMillis": "0",
		"subscription":         "*",
		"subVersion":           "0",
		"expressionType":       "TAG",
	}, nil, true)
	if err != nil {
		return nil, offset, err
	}
	next := offset
	if v, err := strconv.ParseInt(hdr.ExtFields["nextBeginOffset"], 10, 64); err == nil {
		next = v
	}
	switch hdr.Code {
	case ResSuccess:
		return primitive.DecodeMessage(body), next, nil
	case ResPullNotFound, ResPullRetry, ResOffsetMoved:
		return nil, next, nil
	default:
		return nil, offset, fmt.Errorf("pull %s/%d@%d: code %d: %s", topic, queue, offset, hdr.Code, hdr.Remark)
	}
}

// Send stores m in one queue of a broker (SEND_MESSAGE) and returns the
// message id (its UNIQ_KEY, set here when m has none) and queue offset.
func (r Client) Send(ctx context.Context, broker, topic string, queue int, m *primitive.Message) (string, int64, error) {
	if m.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex) == "" {
		m.WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, primitive.CreateUniqID())
	}
	hdr, _, err := r.Call(ctx, broker, ReqSendMessage, map[string]string{
		"producerGroup":         "sluice-rmqwire",
		"topic":                 topic,
		"defaultTopic":          "TBW102",
		"defaultTopicQueueNums": "4",
		"queueId":               strconv.Itoa(queue),
		"sysFlag":               "0",
		"bornTimestamp":         strconv.FormatInt(time.Now().UnixMilli(), 10),
		"flag":                  strconv.Itoa(int(m.Flag)),
		"properties":            m.MarshallProperties(),
		"reconsumeTimes":        "0",
		"unitMode":              "false",
		"batch":                 "false",
	}, m.Body, true)
	if err != nil {
		return "", 0, err
	}
	if hdr.Code != ResSuccess {
		return "", 0, fmt.Errorf("send to %s/%d: code %d: %s", topic, queue, hdr.Code, hdr.Remark)
	}
	off, err := strconv.ParseInt(hdr.ExtFields["queueOffset"], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("send to %s/%d: response without queueOffset: %v", topic, queue, hdr.ExtFields)
	}
	return m.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex), off, nil
}
