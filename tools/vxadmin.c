/* vxadmin: operator commands for a Valerix cluster.
 *
 *   vxadmin topics   create every topic of the system that does not exist yet, with
 *                    VX_TOPIC_PARTITIONS partitions (default 2) and VX_TOPIC_RETENTION_MS
 *                    retention (default 7 days); topic names follow the services' variables.
 *
 * Auto-creation is off on our broker: this is how topics come to exist, explicitly. */
#include <stdio.h>
#include <string.h>

#include "vx_config.h"
#include "vx_kafka.h"

static int topics(void) {
    const char *names[] = {
        vx_topic(VX_TOPIC_INVENTORY_COMMANDS), vx_topic(VX_TOPIC_INVENTORY_EVENTS), vx_topic(VX_TOPIC_INVENTORY_DLQ),
        vx_topic(VX_TOPIC_ORDERS_COMMANDS),    vx_topic(VX_TOPIC_ORDERS_RESULTS),   vx_topic(VX_TOPIC_ORDERS_DLQ),
    };
    char err[512];
    long long partitions, retention;
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    int rc;

    if (vx_cfg_int("VX_TOPIC_PARTITIONS", VX_TOPIC_PARTITIONS_DEFAULT, 1, 1000, &partitions, err, sizeof(err)) ||
        vx_cfg_int("VX_TOPIC_RETENTION_MS", 7LL * 24 * 3600 * 1000, 60000, 1LL << 50, &retention, err, sizeof(err)) ||
        !(conf = vx_kafka_conf_new(VX_KAFKA_ADMIN, NULL, err, sizeof(err)))) {
        fprintf(stderr, "vxadmin: %s\n", err);
        return 2;
    }
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "vxadmin: %s\n", err);
        return 1;
    }
    rc = vx_kafka_ensure_topics(rk, names, 6, (int)partitions, retention, 30000, err, sizeof(err));
    if (rc)
        fprintf(stderr, "vxadmin: %s\n", err);
    else
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) printf("topic %s ready\n", names[i]);
    rd_kafka_destroy(rk);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "topics") == 0) return topics();
    fprintf(stderr, "usage: vxadmin topics\n");
    return 2;
}
