package testenv

import (
	"errors"
	"fmt"
	"testing"
)

// The RocketMQ instance with ACL on: scripts/brokers.sh starts a second name
// server and broker (`up rocketmq-acl`) whose broker authenticates every
// request (ACL 2.0) and knows one super user. The main instance
// (RocketMQNameServer) stays open for every other test.
const (
	EnvRocketMQACLNamesrv   = "SLUICE_ROCKETMQ_ACL_NAMESRV"
	EnvRocketMQACLAccessKey = "SLUICE_ROCKETMQ_ACL_ACCESS_KEY"
	EnvRocketMQACLSecretKey = "SLUICE_ROCKETMQ_ACL_SECRET_KEY"

	DefaultRocketMQACLNamesrv   = "127.0.0.1:9877"
	DefaultRocketMQACLAccessKey = "sluiceadmin"
	DefaultRocketMQACLSecretKey = "sluiceadminsecret"
)

// RocketMQACLBroker is the ACL-enabled RocketMQ: its name server and the
// credentials of its admin user. Immutable.
type RocketMQACLBroker struct {
	NameServer           string
	AccessKey, SecretKey string
}

// RocketMQACL returns the ACL-enabled RocketMQ. The first call in the
// process checks that its name server lists a broker, that the broker
// answers a request signed with the credentials and refuses the same
// request unsigned (so ACL is really on).
func RocketMQACL(t testing.TB) RocketMQACLBroker {
	t.Helper()
	ns, source := getenv(EnvRocketMQACLNamesrv, DefaultRocketMQACLNamesrv)
	ak, _ := getenv(EnvRocketMQACLAccessKey, DefaultRocketMQACLAccessKey)
	sk, _ := getenv(EnvRocketMQACLSecretKey, DefaultRocketMQACLSecretKey)
	b := RocketMQACLBroker{NameServer: ns, AccessKey: ak, SecretKey: sk}
	err := checkOnce("rocketmq-acl|"+ns+"|"+ak, func() error { return b.check() })
	if err != nil {
		unreachable(t, "the ACL-enabled RocketMQ", ns, source, "rocketmq-acl", err)
	}
	return b
}

func (b RocketMQACLBroker) creds() *rmqCredentials {
	return &rmqCredentials{AccessKey: b.AccessKey, SecretKey: b.SecretKey}
}

// check asks every broker for the offset of a queue of the readiness topic
// (created by scripts/brokers.sh), signed and unsigned.
func (b RocketMQACLBroker) check() error {
	addrs, err := rocketmqBrokerAddrs(firstNamesrv(b.NameServer), probeTimeout)
	if err != nil {
		return err
	}
	ext := map[string]string{"topic": "sluice-ready", "queueId": "0"}
	for _, a := range addrs {
		resp, _, err := rmqCallAs(a, rmqGetMaxOffset, ext, nil, b.creds(), probeTimeout)
		if err != nil {
			return err
		}
		if resp.Code != rmqSuccess {
			return fmt.Errorf("broker %s refuses a request signed by %s: code %d %s", a, b.AccessKey, resp.Code, resp.Remark)
		}
		resp, _, err = rmqCall(a, rmqGetMaxOffset, ext, nil, probeTimeout)
		if err != nil {
			return err
		}
		if resp.Code == rmqSuccess {
			return errors.New("broker " + a + " answers unsigned requests: ACL is off")
		}
	}
	return nil
}

// CreateTopic creates (or updates) a topic with the given number of queues
// on every master broker of the ACL instance, with signed requests, and
// waits until the name server returns its route.
func (b RocketMQACLBroker) CreateTopic(t testing.TB, name string, queues int) {
	t.Helper()
	if queues < 1 {
		t.Fatalf("testenv: CreateTopic(%q, %d): queues must be >= 1", name, queues)
	}
	ns := firstNamesrv(b.NameServer)
	if err := rocketmqCreateTopicAs(ns, name, queues, b.creds(), probeTimeout); err != nil {
		t.Fatalf("testenv: creating topic %q on the ACL-enabled RocketMQ: %v", name, err)
	}
	rocketmqWaitRoute(t, ns, name, queues)
}
