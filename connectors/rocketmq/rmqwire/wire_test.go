package rmqwire

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/sluicehq/sluice/internal/testenv"
)

func TestParseRoute(t *testing.T) {
	// What a 5.5 name server sends: fastjson leaves the broker id unquoted.
	body := []byte(`{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.2:10911",1:"10.0.0.3:10911"},"brokerName":"b","cluster":"C"},` +
		`{"brokerAddrs":{0:"10.0.0.1:10911"},"brokerName":"a","cluster":"C"},{"brokerAddrs":{1:"10.0.0.9:10911"},"brokerName":"slave-only"}],` +
		`"filterServerTable":{},"queueDatas":[{"brokerName":"b","perm":6,"readQueueNums":2,"writeQueueNums":2},` +
		`{"brokerName":"a","perm":6,"readQueueNums":4,"writeQueueNums":4},{"brokerName":"slave-only","readQueueNums":4},{"brokerName":"c","readQueueNums":1}]}`)
	got, err := parseRoute("t", body)
	if err != nil {
		t.Fatal(err)
	}
	want := []BrokerQueues{{Name: "a", Addr: "10.0.0.1:10911", Queues: 4}, {Name: "b", Addr: "10.0.0.2:10911", Queues: 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseRoute = %+v, want %+v", got, want)
	}
	if _, err := parseRoute("t", []byte(`{"brokerDatas":[],"queueDatas":[]}`)); !errors.Is(err, ErrNoRoute) {
		t.Errorf("empty route: %v, want ErrNoRoute", err)
	}
	if _, err := parseRoute("t", []byte(`not json`)); err == nil {
		t.Error("garbage route parsed")
	}
}

func TestSign(t *testing.T) {
	ext := map[string]string{"topic": "t", "queueId": "3"}
	got := sign(ext, []byte("body"), "ak", "sk")
	// Values in key order: AccessKey, queueId, topic; then the body.
	mac := hmac.New(sha1.New, []byte("sk"))
	mac.Write([]byte("ak" + "3" + "t" + "body"))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if got["Signature"] != want || got["AccessKey"] != "ak" || got["topic"] != "t" {
		t.Errorf("sign = %v, want Signature %s", got, want)
	}
	if _, ok := ext["Signature"]; ok {
		t.Error("sign modified its input")
	}
}

// TestSendPullRoundTrip sends to and pulls from the real broker.
func TestSendPullRoundTrip(t *testing.T) {
	ns := []string{testenv.RocketMQNameServer(t)}
	topic := testenv.UniqueName(t, "wire")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := (Client{}).Route(ctx, ns, topic); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("Route of a missing topic = %v, want ErrNoRoute", err)
	}
	testenv.RocketMQCreateTopic(t, topic, 2)
	bqs, err := Client{}.Route(ctx, ns, topic)
	if err != nil || len(bqs) != 1 || bqs[0].Queues != 2 {
		t.Fatalf("Route = %+v, %v", bqs, err)
	}
	if err := DialAll(ctx, bqs); err != nil {
		t.Fatal(err)
	}
	m := primitive.NewMessage(topic, []byte("hello"))
	m.WithProperty("color", "red")
	id, off, err := Client{}.Send(ctx, bqs[0].Addr, topic, 1, m)
	if err != nil || id == "" || off != 0 {
		t.Fatalf("Send = %q, %d, %v", id, off, err)
	}
	var got []*primitive.MessageExt
	next := int64(0)
	for len(got) == 0 && ctx.Err() == nil {
		got, next, err = Client{}.Pull(ctx, bqs[0].Addr, "wire-test", topic, 1, 0, 8)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != 1 || string(got[0].Body) != "hello" || got[0].GetProperty("color") != "red" || got[0].MsgId != id || next != 1 {
		t.Fatalf("Pull = %v (next %d)", got, next)
	}
	none, next, err := Client{}.Pull(ctx, bqs[0].Addr, "wire-test", topic, 1, 1, 8)
	if err != nil || len(none) != 0 || next != 1 {
		t.Errorf("Pull past the end = %d messages, next %d, %v", len(none), next, err)
	}
}
