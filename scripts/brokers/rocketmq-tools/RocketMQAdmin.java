// Admin helper for the RocketMQ name server + broker started by scripts/brokers.sh.
//
// Usage (classpath: the rocketmq-tools dependency folder plus this class):
//   RocketMQAdmin ready NAMESRV CLUSTER TOPIC DEADLINE_SECONDS
//       wait until the name server lists a master broker of CLUSTER, create TOPIC
//       (4 queues) on it, wait for its route, and send one message (SEND_OK).
//   RocketMQAdmin topic NAMESRV CLUSTER TOPIC QUEUES DEADLINE_SECONDS
//       create or update TOPIC with QUEUES read/write queues on every master of
//       CLUSTER and wait until the name server returns a route with them.
// Exits 0 on success, 1 when the deadline passed (last error on stderr), 2 on bad usage.
// A deadline of 0 makes exactly one attempt.
// With -Dsluice.accessKey=AK -Dsluice.secretKey=SK every request is signed (RocketMQ ACL).
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.SessionCredentials;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.remoting.RPCHook;
import org.apache.rocketmq.remoting.protocol.body.ClusterInfo;
import org.apache.rocketmq.remoting.protocol.route.BrokerData;
import org.apache.rocketmq.remoting.protocol.route.QueueData;
import org.apache.rocketmq.remoting.protocol.route.TopicRouteData;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

public class RocketMQAdmin {
    interface Step { String run() throws Exception; }

    public static void main(String[] args) throws Exception {
        int code;
        try {
            code = run(args);
        } catch (IllegalArgumentException e) {
            System.err.println(e.getMessage());
            code = 2;
        }
        // Client threads are not all daemons: leave explicitly.
        System.exit(code);
    }

    static int run(String[] a) throws Exception {
        String usage = "usage: RocketMQAdmin ready NAMESRV CLUSTER TOPIC DEADLINE_SECONDS | topic NAMESRV CLUSTER TOPIC QUEUES DEADLINE_SECONDS";
        if (a.length < 1) throw new IllegalArgumentException(usage);
        switch (a[0]) {
            case "ready": {
                if (a.length != 5) throw new IllegalArgumentException(usage);
                String ns = a[1], cluster = a[2], topic = a[3];
                return retry(Long.parseLong(a[4]), () -> {
                    String brokers = createTopic(ns, cluster, topic, 4);
                    return brokers + "; " + send(ns, topic);
                });
            }
            case "topic": {
                if (a.length != 6) throw new IllegalArgumentException(usage);
                String ns = a[1], cluster = a[2], topic = a[3];
                int queues = Integer.parseInt(a[4]);
                if (queues < 1) throw new IllegalArgumentException("QUEUES must be >= 1");
                return retry(Long.parseLong(a[5]), () -> createTopic(ns, cluster, topic, queues));
            }
            default:
                throw new IllegalArgumentException(usage);
        }
    }

    static int retry(long seconds, Step step) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        String last = "no attempt";
        for (int attempt = 1; ; attempt++) {
            try {
                System.out.println("ok after " + attempt + " attempt(s): " + step.run());
                return 0;
            } catch (Exception e) {
                last = e.toString();
            }
            if (System.nanoTime() >= deadline) {
                System.err.println("rocketmq not ready: " + last);
                return 1;
            }
            Thread.sleep(500);
        }
    }

    /** The ACL signer when credentials are given, else null (no signing). */
    static RPCHook aclHook() {
        String ak = System.getProperty("sluice.accessKey", ""), sk = System.getProperty("sluice.secretKey", "");
        return ak.isEmpty() ? null : new AclClientRPCHook(new SessionCredentials(ak, sk));
    }

    static DefaultMQAdminExt admin(String ns) throws Exception {
        DefaultMQAdminExt admin = new DefaultMQAdminExt(aclHook(), 5000);
        admin.setNamesrvAddr(ns);
        admin.setInstanceName("sluice-admin-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        admin.start();
        return admin;
    }

    /** Creates the topic on every master of the cluster; returns a description once the route shows it. */
    static String createTopic(String ns, String cluster, String topic, int queues) throws Exception {
        DefaultMQAdminExt admin = admin(ns);
        try {
            ClusterInfo ci = admin.examineBrokerClusterInfo();
            Set<String> names = ci.getClusterAddrTable() == null ? null : ci.getClusterAddrTable().get(cluster);
            if (names == null || names.isEmpty()) throw new IllegalStateException("name server lists no broker in cluster " + cluster);
            List<String> masters = new ArrayList<>();
            for (String name : names) {
                BrokerData bd = ci.getBrokerAddrTable().get(name);
                String addr = bd == null ? null : bd.getBrokerAddrs().get(0L);
                if (addr == null) throw new IllegalStateException("broker " + name + " has no master address yet");
                masters.add(name + "@" + addr);
                TopicConfig tc = new TopicConfig(topic, queues, queues, 6); // PERM_READ|PERM_WRITE
                admin.createAndUpdateTopicConfig(addr, tc);
            }
            TopicRouteData route = admin.examineTopicRouteInfo(topic);
            for (String name : names) {
                QueueData q = null;
                for (QueueData qd : route.getQueueDatas()) if (qd.getBrokerName().equals(name)) q = qd;
                if (q == null || q.getReadQueueNums() != queues || q.getWriteQueueNums() != queues) {
                    throw new IllegalStateException("route of " + topic + " does not show " + queues + " queues on " + name + " yet");
                }
            }
            return "topic " + topic + " (" + queues + " queues) on " + masters;
        } finally {
            admin.shutdown();
        }
    }

    static String send(String ns, String topic) throws Exception {
        DefaultMQProducer p = new DefaultMQProducer("sluice-ready-producer", aclHook());
        p.setNamesrvAddr(ns);
        p.setInstanceName("sluice-ready-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        p.setVipChannelEnabled(false);
        p.setSendMsgTimeout(5000);
        p.setRetryTimesWhenSendFailed(0);
        p.start();
        try {
            SendResult r = p.send(new Message(topic, "ready", "ready".getBytes(StandardCharsets.UTF_8)));
            if (r.getSendStatus() != SendStatus.SEND_OK) throw new IllegalStateException("send status " + r.getSendStatus());
            return "sent " + r.getMsgId() + " to " + r.getMessageQueue();
        } finally {
            p.shutdown();
        }
    }
}
