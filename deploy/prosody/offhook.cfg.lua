-- offhook's phone contacts live on their own component domain.
-- Listen for XEP-0114 components on loopback only: the component runs on this host.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "phone.example.com"
    -- Same value as [xmpp] secret in /etc/offhook/offhook.conf.
    component_secret = "change-me"
