/*
 * polaris_code.c: see polaris_code.h. The texts are polaris-server's own
 * (its code-to-message table), so clients that log or show `info` see what
 * they would see against Polaris.
 */
#include "polaris_code.h"

#include <stddef.h>

#include "polaris_code.pb-c.h"

typedef struct code_text {
    uint32_t code;
    const char *text;
} code_text_t;

static const code_text_t code_texts[] = {
    {V1__CODE__ExecuteSuccess, "execute success"},
    {V1__CODE__DataNoChange, "discover data is no change"},
    {V1__CODE__NoNeedUpdate, "update data is no change, no need to update"},
    {V1__CODE__BadRequest, "bad request"},
    {V1__CODE__ParseException, "request decode failed"},
    {V1__CODE__EmptyRequest, "empty request"},
    {V1__CODE__BatchSizeOverLimit, "batch size over the limit"},
    {V1__CODE__InvalidDiscoverResource, "invalid discover resource"},
    {V1__CODE__InvalidParameter, "invalid parameter"},
    {V1__CODE__EmptyQueryParameter, "query instance parameter is empty"},
    {V1__CODE__InvalidQueryInsParameter, "query instance, service or namespace or host is required"},
    {V1__CODE__InvalidNamespaceName, "invalid namespace name"},
    {V1__CODE__InvalidNamespaceOwners, "invalid namespace owners"},
    {V1__CODE__InvalidNamespaceToken, "invalid namespace token"},
    {V1__CODE__InvalidServiceName, "invalid service name"},
    {V1__CODE__InvalidServiceOwners, "invalid service owners"},
    {V1__CODE__InvalidServiceToken, "invalid service token"},
    {V1__CODE__InvalidServiceMetadata, "invalid service metadata"},
    {V1__CODE__InvalidServicePorts, "invalid service ports"},
    {V1__CODE__InvalidServiceBusiness, "invalid service business"},
    {V1__CODE__InvalidServiceDepartment, "invalid service department"},
    {V1__CODE__InvalidServiceCMDB, "invalid service CMDB"},
    {V1__CODE__InvalidServiceComment, "invalid service comment"},
    {V1__CODE__InvalidInstanceID, "invalid instance id"},
    {V1__CODE__InvalidInstanceHost, "invalid instance host"},
    {V1__CODE__InvalidInstancePort, "invalid instance port"},
    {V1__CODE__InvalidInstanceProtocol, "invalid instance protocol"},
    {V1__CODE__InvalidInstanceVersion, "invalid instance version"},
    {V1__CODE__InvalidInstanceLogicSet, "invalid instance logic set"},
    {V1__CODE__InvalidInstanceIsolate, "invalid instance isolate"},
    {V1__CODE__HealthCheckNotOpen, "server not open health check"},
    {V1__CODE__HeartbeatOnDisabledIns, "heartbeat on disabled instance"},
    {V1__CODE__HeartbeatExceedLimit, "instance can only heartbeat 1 time per second"},
    {V1__CODE__InvalidMetadata, "the length of metadata is too long or metadata contains invalid characters"},
    {V1__CODE__InvalidPlatformID, "invalid platform id"},
    {V1__CODE__ExistedResource, "existed resource"},
    {V1__CODE__NotFoundResource, "not found resource"},
    {V1__CODE__NamespaceExistedServices, "some services existed in namespace"},
    {V1__CODE__ServiceExistedInstances, "some instances existed in service"},
    {V1__CODE__SameInstanceRequest, "the same instance request"},
    {V1__CODE__NotFoundService, "not found service"},
    {V1__CODE__NotFoundInstance, "not found instances"},
    {V1__CODE__NotFoundNamespace, "not found namespace"},
    {V1__CODE__ClientAPINotOpen, "client api is not open"},
    {V1__CODE__InstanceTooManyRequests, "your instance has too many requests"},
    {V1__CODE__ExecuteException, "execute exception"},
    {V1__CODE__StoreLayerException, "store layer exception"},
    {V1__CODE__HeartbeatException, "heartbeat execute exception"},
    {V1__CODE__InstanceRegisTimeout, "instance async regist timeout"},
};

const char *polaris_code_info(uint32_t code)
{
    for (size_t i = 0; i < sizeof code_texts / sizeof code_texts[0]; i++)
        if (code_texts[i].code == code)
            return code_texts[i].text;
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&v1__code__descriptor, (int)code);
    return v ? v->name : "unknown code";
}

int polaris_http_status(uint32_t code)
{
    uint32_t s = code / 1000;
    return s >= 100 && s <= 599 ? (int)s : 500;
}
