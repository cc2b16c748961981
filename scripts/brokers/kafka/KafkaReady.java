// Readiness probe for the Kafka broker started by scripts/brokers.sh.
//
// Usage: java -cp 'LIB/*:CLASSES' KafkaReady BOOTSTRAP DEADLINE_SECONDS [TOPIC]
//
// Succeeds (exit 0) once, within the deadline, a metadata request lists at least
// one broker and a controller, the probe topic exists (created with 1 partition
// if missing) and a record produced to it with acks=all is acknowledged.
// A deadline of 0 makes exactly one attempt (used for "is it healthy?").
import java.nio.charset.StandardCharsets;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: KafkaReady BOOTSTRAP DEADLINE_SECONDS [TOPIC]");
            System.exit(2);
        }
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        String topic = args.length > 2 ? args[2] : "sluice-ready";
        String last = "no attempt";
        for (int attempt = 1; ; attempt++) {
            try {
                String info = check(bootstrap, topic);
                System.out.println("kafka ready after " + attempt + " attempt(s): " + info);
                System.exit(0);
            } catch (Exception e) {
                Throwable c = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
                last = c.toString();
            }
            if (System.nanoTime() >= deadline) {
                System.err.println("kafka not ready at " + bootstrap + ": " + last);
                System.exit(1);
            }
            Thread.sleep(500);
        }
    }

    static String check(String bootstrap, String topic) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "sluice-kafka-ready");
        String desc;
        try (Admin admin = Admin.create(p)) {
            DescribeClusterResult dc = admin.describeCluster();
            Collection<Node> nodes = dc.nodes().get(5, TimeUnit.SECONDS);
            Node controller = dc.controller().get(5, TimeUnit.SECONDS);
            if (nodes.isEmpty()) throw new IllegalStateException("metadata lists no broker");
            if (controller == null || controller.isEmpty()) throw new IllegalStateException("metadata lists no controller");
            desc = "cluster " + dc.clusterId().get(5, TimeUnit.SECONDS) + ", brokers " + nodes + ", controller " + controller.id();
            if (!admin.listTopics().names().get(5, TimeUnit.SECONDS).contains(topic)) {
                try {
                    admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(10, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) throw e;
                }
            }
        }
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "5000");
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "10000");
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        pp.put(ProducerConfig.CLIENT_ID_CONFIG, "sluice-kafka-ready");
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            var md = producer.send(new ProducerRecord<>(topic, "ready".getBytes(StandardCharsets.UTF_8))).get(10, TimeUnit.SECONDS);
            return desc + ", produced to " + md.topic() + "-" + md.partition() + "@" + md.offset();
        }
    }
}
