from twisted.application.service import ServiceMaker

withcache = ServiceMaker(
    "withcache", "withcache.tap", "URL-keyed cache-host for big HTTP artifacts", "withcache"
)
