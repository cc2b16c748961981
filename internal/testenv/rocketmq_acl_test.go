package testenv

import (
	"strings"
	"testing"
)

func TestRocketMQACL(t *testing.T) {
	b := RocketMQACL(t) // checks signed accepted, unsigned refused
	topic := UniqueName(t, "acl")
	b.CreateTopic(t, topic, 2)
	ns := firstNamesrv(b.NameServer)
	if err := rocketmqCreateTopic(ns, UniqueName(t, "acl-unsigned"), 1, probeTimeout); err == nil ||
		!strings.Contains(err.Error(), "username cannot be null") {
		t.Errorf("unsigned topic creation = %v, want the broker's refusal", err)
	}
	wrong := &rmqCredentials{AccessKey: b.AccessKey, SecretKey: b.SecretKey + "x"}
	if err := rocketmqCreateTopicAs(ns, UniqueName(t, "acl-wrong"), 1, wrong, probeTimeout); err == nil ||
		!strings.Contains(err.Error(), "check signature failed") {
		t.Errorf("topic creation with a wrong secret = %v, want the broker's refusal", err)
	}
}

func TestRocketMQACLMissingFails(t *testing.T) {
	t.Setenv(EnvRocketMQACLNamesrv, "127.0.0.1:1")
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		RocketMQACL(f)
	}()
	<-done
	if f.skipped || !strings.Contains(f.fatal, "not reachable") || !strings.Contains(f.fatal, "scripts/brokers.sh up rocketmq-acl") {
		t.Fatalf("RocketMQACL without a broker: skipped=%v fatal=%q, want a failure with the hint", f.skipped, f.fatal)
	}
}

func TestRMQSign(t *testing.T) {
	// Values in key order (AccessKey, queueId, topic), then the body:
	// HMAC-SHA1("ak" + "0" + "t" + "body", "sk"), as the clients sign.
	got := rmqSign(map[string]string{"topic": "t", "queueId": "0"}, []byte("body"), rmqCredentials{"ak", "sk"})
	const want = "RdC3gymvXbMybfDUz1KA7jDKoEg="
	if got["Signature"] != want || got["AccessKey"] != "ak" || got["topic"] != "t" {
		t.Errorf("signed fields %v, want Signature %s", got, want)
	}
}
