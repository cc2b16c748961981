package pipelines

// RabbitMQSource consumes one queue with manual acknowledgements.
type RabbitMQSource struct {
	// URL is the AMQP URL, e.g. amqp://user:pass@host:5672/vhost (a secret: it may hold credentials).
	URL Secret `yaml:"url" json:"url" jsonschema:"required"`
	// Queue is the queue to consume.
	Queue string `yaml:"queue" json:"queue" jsonschema:"required"`
}

// RabbitMQSink publishes events with publisher confirms.
type RabbitMQSink struct {
	// URL is the AMQP URL (a secret: it may hold credentials).
	URL Secret `yaml:"url" json:"url" jsonschema:"required"`
	// Exchange to publish to ("" = the default exchange).
	Exchange string `yaml:"exchange,omitempty" json:"exchange,omitempty"`
	// RoutingKey of published messages.
	RoutingKey string `yaml:"routingKey,omitempty" json:"routingKey,omitempty"`
}

func validateRabbitMQSource(v *validator, path string, s *RabbitMQSource) {
	v.required(path+".queue", s.Queue)
}

func validateRabbitMQSink(v *validator, path string, s *RabbitMQSink) {}

func rabbitMQSourceDefaults(s *RabbitMQSource) {}

func rabbitMQSinkDefaults(s *RabbitMQSink) {}
