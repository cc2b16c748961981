package testenv

// Minimal wire-protocol probes, so that this package needs no client library:
// each one proves that the right kind of server answers, not just that a port
// is open.

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // RocketMQ's ACL signature is HMAC-SHA1
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
)

func dialDeadline(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// kafkaAPIVersions sends an ApiVersions v0 request and checks the answer.
func kafkaAPIVersions(addr string, timeout time.Duration) error {
	c, err := dialDeadline(addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	const clientID = "sluice-testenv"
	const correlation = 0x51ce
	req := make([]byte, 0, 64)
	req = binary.BigEndian.AppendUint16(req, 18) // ApiVersions
	req = binary.BigEndian.AppendUint16(req, 0)  // version 0
	req = binary.BigEndian.AppendUint32(req, correlation)
	req = binary.BigEndian.AppendUint16(req, uint16(len(clientID)))
	req = append(req, clientID...)
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(req)))
	if _, err := c.Write(append(msg, req...)); err != nil {
		return err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("reading ApiVersions response: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 6 || n > 1<<20 {
		return fmt.Errorf("not a Kafka ApiVersions response (size %d)", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c, body); err != nil {
		return fmt.Errorf("reading ApiVersions response: %w", err)
	}
	if got := binary.BigEndian.Uint32(body); got != correlation {
		return fmt.Errorf("not a Kafka ApiVersions response (correlation id %d)", got)
	}
	if code := int16(binary.BigEndian.Uint16(body[4:])); code != 0 {
		return fmt.Errorf("ApiVersions error code %d", code)
	}
	return nil
}

// amqpGreeting sends the AMQP 0-9-1 protocol header and expects the
// Connection.Start method frame in return.
func amqpGreeting(addr string, timeout time.Duration) error {
	c, err := dialDeadline(addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return amqpGreetingOn(c)
}

// amqpGreetingOn is amqpGreeting on an open connection (plain or TLS) with
// its deadline set.
func amqpGreetingOn(c net.Conn) error {
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	var f [11]byte // type, channel, size, class, method
	if _, err := io.ReadFull(c, f[:]); err != nil {
		return fmt.Errorf("no AMQP greeting: %w", err)
	}
	if f[0] != 1 || binary.BigEndian.Uint16(f[7:]) != 10 || binary.BigEndian.Uint16(f[9:]) != 10 {
		return fmt.Errorf("not an AMQP 0-9-1 Connection.Start frame: % x", f[:])
	}
	return nil
}

// pgStartup opens a PostgreSQL session for user/db. It succeeds when the
// server reports ReadyForQuery, or asks for a password (the server is there
// and the database exists far enough to ask; credentials are the client's
// business).
func pgStartup(addr, user, db string, timeout time.Duration) error {
	c, err := dialDeadline(addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	params := "user\x00" + user + "\x00database\x00" + db + "\x00\x00"
	msg := binary.BigEndian.AppendUint32(nil, uint32(8+len(params)))
	msg = binary.BigEndian.AppendUint32(msg, 196608) // protocol 3.0
	msg = append(msg, params...)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	for {
		typ, payload, err := pgRead(r)
		if err != nil {
			return err
		}
		switch typ {
		case 'R':
			if len(payload) < 4 {
				return errors.New("short authentication message")
			}
			if binary.BigEndian.Uint32(payload) != 0 {
				return nil // password requested: the server is up
			}
		case 'E':
			return fmt.Errorf("server refused the session: %s", pgError(payload))
		case 'Z':
			_, _ = c.Write([]byte{'X', 0, 0, 0, 4}) // Terminate
			return nil
		}
	}
}

func pgRead(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, fmt.Errorf("reading from PostgreSQL: %w", err)
	}
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return 0, nil, fmt.Errorf("reading from PostgreSQL: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size < 4 || size > 1<<24 {
		return 0, nil, fmt.Errorf("not a PostgreSQL message (type %q, size %d)", typ, size)
	}
	payload := make([]byte, size-4)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("reading from PostgreSQL: %w", err)
	}
	return typ, payload, nil
}

// pgError renders an ErrorResponse: severity, code and message.
func pgError(p []byte) string {
	var parts []string
	for len(p) > 1 {
		field := p[0]
		end := 1
		for end < len(p) && p[end] != 0 {
			end++
		}
		if field == 'S' || field == 'C' || field == 'M' {
			parts = append(parts, string(p[1:end]))
		}
		if end >= len(p) {
			break
		}
		p = p[end+1:]
	}
	return strings.Join(parts, " ")
}

// ---- RocketMQ remoting protocol (JSON header serialization) ----

const (
	rmqSendMessage       = 10
	rmqUpdateCreateTopic = 17
	rmqGetMaxOffset      = 30
	rmqGetRouteByTopic   = 105
	rmqGetClusterInfo    = 106
	rmqSuccess           = 0
	rmqTopicNotExist     = 17
	rmqLanguage          = "GO"
	rmqProtocolVersion   = 317
	rmqSerializeJSON     = 0
	rmqResponseFlagMask  = 1
)

type rmqCommand struct {
	Code      int               `json:"code"`
	Language  string            `json:"language,omitempty"`
	Version   int               `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int               `json:"flag"`
	Remark    string            `json:"remark,omitempty"`
	ExtFields map[string]string `json:"extFields,omitempty"`
}

// rmqCredentials are RocketMQ ACL keys: requests carrying them are signed.
type rmqCredentials struct{ AccessKey, SecretKey string }

// rmqSign returns ext plus the ACL fields the clients add: AccessKey, and
// Signature = base64(HMAC-SHA1(secret key, the values of all fields,
// AccessKey included, in key order, then the body)).
func rmqSign(ext map[string]string, body []byte, c rmqCredentials) map[string]string {
	out := make(map[string]string, len(ext)+2)
	for k, v := range ext {
		out[k] = v
	}
	out["AccessKey"] = c.AccessKey
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mac := hmac.New(sha1.New, []byte(c.SecretKey))
	for _, k := range keys {
		mac.Write([]byte(out[k]))
	}
	mac.Write(body)
	out["Signature"] = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return out
}

// rmqCall sends one request and returns the response header and body.
func rmqCall(addr string, code int, ext map[string]string, body []byte, timeout time.Duration) (rmqCommand, []byte, error) {
	return rmqCallAs(addr, code, ext, body, nil, timeout)
}

// rmqCallAs is rmqCall, signed with creds unless they are nil.
func rmqCallAs(addr string, code int, ext map[string]string, body []byte, creds *rmqCredentials, timeout time.Duration) (rmqCommand, []byte, error) {
	var resp rmqCommand
	if creds != nil {
		ext = rmqSign(ext, body, *creds)
	}
	c, err := dialDeadline(addr, timeout)
	if err != nil {
		return resp, nil, err
	}
	defer c.Close()
	const opaque = 4242
	hdr, err := json.Marshal(rmqCommand{Code: code, Language: rmqLanguage, Version: rmqProtocolVersion, Opaque: opaque, ExtFields: ext})
	if err != nil {
		return resp, nil, err
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(4+len(hdr)+len(body)))
	msg = binary.BigEndian.AppendUint32(msg, uint32(rmqSerializeJSON)<<24|uint32(len(hdr)))
	msg = append(msg, hdr...)
	msg = append(msg, body...)
	if _, err := c.Write(msg); err != nil {
		return resp, nil, err
	}
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return resp, nil, fmt.Errorf("reading RocketMQ response: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size < 4 || size > 1<<26 {
		return resp, nil, fmt.Errorf("not a RocketMQ remoting frame (size %d)", size)
	}
	frame := make([]byte, size)
	if _, err := io.ReadFull(c, frame); err != nil {
		return resp, nil, fmt.Errorf("reading RocketMQ response: %w", err)
	}
	mark := binary.BigEndian.Uint32(frame)
	if mark>>24 != rmqSerializeJSON {
		return resp, nil, fmt.Errorf("RocketMQ response uses serialization %d, not JSON", mark>>24)
	}
	hl := mark & 0xFFFFFF
	if 4+hl > size {
		return resp, nil, fmt.Errorf("bad RocketMQ header length %d", hl)
	}
	if err := json.Unmarshal(frame[4:4+hl], &resp); err != nil {
		return resp, nil, fmt.Errorf("decoding RocketMQ response header: %w", err)
	}
	if resp.Flag&rmqResponseFlagMask == 0 || resp.Opaque != opaque {
		return resp, nil, fmt.Errorf("unexpected RocketMQ frame (flag %d, opaque %d)", resp.Flag, resp.Opaque)
	}
	return resp, frame[4+hl:], nil
}

var (
	reBrokerAddr = regexp.MustCompile(`"brokerAddrs"\s*:\s*\{\s*"?0"?\s*:\s*"([^"]+)"`)
	reReadQueues = regexp.MustCompile(`"readQueueNums"\s*:\s*(\d+)`)
	reWriteQueue = regexp.MustCompile(`"writeQueueNums"\s*:\s*(\d+)`)
)

// rocketmqBrokerCount asks the name server for the cluster table and counts
// the brokers that have a master address.
func rocketmqBrokerCount(namesrv string, timeout time.Duration) (int, error) {
	addrs, err := rocketmqBrokerAddrs(namesrv, timeout)
	if err != nil && len(addrs) == 0 && strings.Contains(err.Error(), "lists no broker") {
		return 0, nil
	}
	return len(addrs), err
}

// rmqRoute is the part of a topic route the tests care about.
type rmqRoute struct {
	BrokerAddrs []string // master addresses
	ReadQueues  []int    // per broker entry in queueDatas
	WriteQueues []int
}

func (r rmqRoute) queuesOK(n int) bool {
	if len(r.ReadQueues) == 0 || len(r.BrokerAddrs) == 0 {
		return false
	}
	for i := range r.ReadQueues {
		if r.ReadQueues[i] != n || i >= len(r.WriteQueues) || r.WriteQueues[i] != n {
			return false
		}
	}
	return true
}

// rocketmqRoute fetches the route of a topic from the name server.
func rocketmqRoute(namesrv, topic string, timeout time.Duration) (rmqRoute, error) {
	var r rmqRoute
	resp, body, err := rmqCall(namesrv, rmqGetRouteByTopic, map[string]string{"topic": topic}, nil, timeout)
	if err != nil {
		return r, err
	}
	switch resp.Code {
	case rmqSuccess:
	case rmqTopicNotExist:
		return r, fmt.Errorf("topic %s has no route (code %d %s)", topic, resp.Code, resp.Remark)
	default:
		return r, fmt.Errorf("GET_ROUTEINFO_BY_TOPIC %s: code %d %s", topic, resp.Code, resp.Remark)
	}
	for _, m := range reBrokerAddr.FindAllSubmatch(body, -1) {
		r.BrokerAddrs = append(r.BrokerAddrs, string(m[1]))
	}
	for _, m := range reReadQueues.FindAllSubmatch(body, -1) {
		v, _ := strconv.Atoi(string(m[1]))
		r.ReadQueues = append(r.ReadQueues, v)
	}
	for _, m := range reWriteQueue.FindAllSubmatch(body, -1) {
		v, _ := strconv.Atoi(string(m[1]))
		r.WriteQueues = append(r.WriteQueues, v)
	}
	return r, nil
}

// rocketmqSend sends one message straight to a broker (SEND_MESSAGE) and
// returns the queue offset it was stored at.
func rocketmqSend(broker, topic string, queueID int, body []byte, timeout time.Duration) (int64, error) {
	ext := map[string]string{
		"producerGroup":         "sluice-testenv",
		"topic":                 topic,
		"defaultTopic":          "TBW102",
		"defaultTopicQueueNums": "4",
		"queueId":               strconv.Itoa(queueID),
		"sysFlag":               "0",
		"bornTimestamp":         strconv.FormatInt(time.Now().UnixMilli(), 10),
		"flag":                  "0",
		"properties":            "",
		"reconsumeTimes":        "0",
		"unitMode":              "false",
		"batch":                 "false",
	}
	resp, _, err := rmqCall(broker, rmqSendMessage, ext, body, timeout)
	if err != nil {
		return 0, err
	}
	if resp.Code != rmqSuccess {
		return 0, fmt.Errorf("SEND_MESSAGE to %s: code %d %s", topic, resp.Code, resp.Remark)
	}
	off, err := strconv.ParseInt(resp.ExtFields["queueOffset"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("SEND_MESSAGE response without queueOffset: %+v", resp.ExtFields)
	}
	return off, nil
}

// rocketmqMaxOffset returns the next offset of a queue on a broker.
func rocketmqMaxOffset(broker, topic string, queueID int, timeout time.Duration) (int64, error) {
	resp, _, err := rmqCall(broker, rmqGetMaxOffset, map[string]string{"topic": topic, "queueId": strconv.Itoa(queueID)}, nil, timeout)
	if err != nil {
		return 0, err
	}
	if resp.Code != rmqSuccess {
		return 0, fmt.Errorf("GET_MAX_OFFSET %s/%d: code %d %s", topic, queueID, resp.Code, resp.Remark)
	}
	return strconv.ParseInt(resp.ExtFields["offset"], 10, 64)
}

// rocketmqBrokerAddrs returns the master address of every broker the name server lists.
func rocketmqBrokerAddrs(namesrv string, timeout time.Duration) ([]string, error) {
	resp, body, err := rmqCall(namesrv, rmqGetClusterInfo, nil, nil, timeout)
	if err != nil {
		return nil, err
	}
	if resp.Code != rmqSuccess {
		return nil, fmt.Errorf("GET_BROKER_CLUSTER_INFO: code %d %s", resp.Code, resp.Remark)
	}
	var addrs []string
	for _, m := range reBrokerAddr.FindAllSubmatch(body, -1) {
		addrs = append(addrs, string(m[1]))
	}
	if len(addrs) == 0 {
		return nil, errors.New("the name server lists no broker")
	}
	return addrs, nil
}

// rocketmqCreateTopic creates or updates a topic with the given number of
// read/write queues on every master broker (UPDATE_AND_CREATE_TOPIC), the
// same request the Java admin tool's updateTopic sends.
func rocketmqCreateTopic(namesrv, topic string, queues int, timeout time.Duration) error {
	return rocketmqCreateTopicAs(namesrv, topic, queues, nil, timeout)
}

// rocketmqCreateTopicAs is rocketmqCreateTopic with requests to the brokers
// signed with creds unless they are nil (name servers take no ACL).
func rocketmqCreateTopicAs(namesrv, topic string, queues int, creds *rmqCredentials, timeout time.Duration) error {
	addrs, err := rocketmqBrokerAddrs(namesrv, timeout)
	if err != nil {
		return err
	}
	ext := map[string]string{
		"topic":           topic,
		"defaultTopic":    "TBW102",
		"readQueueNums":   strconv.Itoa(queues),
		"writeQueueNums":  strconv.Itoa(queues),
		"perm":            "6", // read + write
		"topicFilterType": "SINGLE_TAG",
		"topicSysFlag":    "0",
		"order":           "false",
	}
	for _, a := range addrs {
		resp, _, err := rmqCallAs(a, rmqUpdateCreateTopic, ext, nil, creds, timeout)
		if err != nil {
			return fmt.Errorf("UPDATE_AND_CREATE_TOPIC on %s: %w", a, err)
		}
		if resp.Code != rmqSuccess {
			return fmt.Errorf("UPDATE_AND_CREATE_TOPIC %s on %s: code %d %s", topic, a, resp.Code, resp.Remark)
		}
	}
	return nil
}
