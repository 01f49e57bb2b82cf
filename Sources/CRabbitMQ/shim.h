// The C side of the AMQP module: librabbitmq's headers, typed wrappers for its variadic calls, and
// typed copies of the constants that Swift cannot import.
#ifndef IMAGE_WORKER_CRABBITMQ_SHIM_H
#define IMAGE_WORKER_CRABBITMQ_SHIM_H

#if __has_include(<rabbitmq-c/amqp.h>)
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/framing.h>
#include <rabbitmq-c/tcp_socket.h>
#include <rabbitmq-c/ssl_socket.h>
#else
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <amqp_ssl_socket.h>
#endif

// Swift cannot call C variadic functions, so amqp_login_with_properties is wrapped here for the
// one SASL mechanism we use (PLAIN, which RabbitMQ offers next to AMQPLAIN).
static inline amqp_rpc_reply_t image_worker_amqp_login_plain(
    amqp_connection_state_t state, const char *vhost, int channel_max, int frame_max,
    int heartbeat, const amqp_table_t *client_properties, const char *user, const char *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat,
                                      client_properties, AMQP_SASL_METHOD_PLAIN, user, password);
}

// Method ids and property flags as typed constants: the headers define them as casts
// (`((amqp_method_number_t)0x003C003C)`), which Swift cannot import.
static const amqp_method_number_t IW_CONNECTION_CLOSE = AMQP_CONNECTION_CLOSE_METHOD;
static const amqp_method_number_t IW_CONNECTION_CLOSE_OK = AMQP_CONNECTION_CLOSE_OK_METHOD;
static const amqp_method_number_t IW_CONNECTION_BLOCKED = AMQP_CONNECTION_BLOCKED_METHOD;
static const amqp_method_number_t IW_CONNECTION_UNBLOCKED = AMQP_CONNECTION_UNBLOCKED_METHOD;
static const amqp_method_number_t IW_CHANNEL_CLOSE = AMQP_CHANNEL_CLOSE_METHOD;
static const amqp_method_number_t IW_CHANNEL_CLOSE_OK = AMQP_CHANNEL_CLOSE_OK_METHOD;
static const amqp_method_number_t IW_BASIC_DELIVER = AMQP_BASIC_DELIVER_METHOD;
static const amqp_method_number_t IW_BASIC_RETURN = AMQP_BASIC_RETURN_METHOD;
static const amqp_method_number_t IW_BASIC_ACK = AMQP_BASIC_ACK_METHOD;
static const amqp_method_number_t IW_BASIC_NACK = AMQP_BASIC_NACK_METHOD;
static const amqp_method_number_t IW_BASIC_CANCEL = AMQP_BASIC_CANCEL_METHOD;

static const amqp_flags_t IW_FLAG_CONTENT_TYPE = AMQP_BASIC_CONTENT_TYPE_FLAG;
static const amqp_flags_t IW_FLAG_CONTENT_ENCODING = AMQP_BASIC_CONTENT_ENCODING_FLAG;
static const amqp_flags_t IW_FLAG_HEADERS = AMQP_BASIC_HEADERS_FLAG;
static const amqp_flags_t IW_FLAG_DELIVERY_MODE = AMQP_BASIC_DELIVERY_MODE_FLAG;
static const amqp_flags_t IW_FLAG_PRIORITY = AMQP_BASIC_PRIORITY_FLAG;
static const amqp_flags_t IW_FLAG_CORRELATION_ID = AMQP_BASIC_CORRELATION_ID_FLAG;
static const amqp_flags_t IW_FLAG_REPLY_TO = AMQP_BASIC_REPLY_TO_FLAG;
static const amqp_flags_t IW_FLAG_EXPIRATION = AMQP_BASIC_EXPIRATION_FLAG;
static const amqp_flags_t IW_FLAG_MESSAGE_ID = AMQP_BASIC_MESSAGE_ID_FLAG;
static const amqp_flags_t IW_FLAG_TIMESTAMP = AMQP_BASIC_TIMESTAMP_FLAG;
static const amqp_flags_t IW_FLAG_TYPE = AMQP_BASIC_TYPE_FLAG;
static const amqp_flags_t IW_FLAG_APP_ID = AMQP_BASIC_APP_ID_FLAG;

#endif
