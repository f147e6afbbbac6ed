-- offhook for Prosody 0.12: put this file in /etc/prosody/conf.d/ (Debian includes that
-- directory), replace example.com (your users' domain), phone.example.com (offhook's
-- component domain, [xmpp] domain) and change-me ([xmpp] secret), then prosodyctl reload.
-- offhook's integration tests load this very file with those three values replaced.

-- XEP-0114: offhook-component connects here. Loopback only: it runs on this host.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- Optional, server-wide: Prosody 0.12 leaves Nagle's algorithm on, which holds small
-- presence stanzas back; with delayed ACKs that put ~40 ms on the p99 of a phone state
-- reaching a client in offhook's benchmarks (5.5-6.4 ms without it, docs/performance.md).
-- Uncomment if your main config sets no network_settings of its own (this replaces them).
-- network_settings = { nagle = false }

-- The users' host. Prosody adds these modules to the global ones.
--   mod_privilege (XEP-0356, Debian's prosody-modules): lets offhook publish the user's own
--     status (XEP-0108 activity, XEP-0152 reachability) into their PEP.
--   mod_groups: a shared roster, so every user has the phone contacts without adding them
--     (members listed in the groups file; see offhook-groups.txt).
VirtualHost "example.com"
    modules_enabled = { "privilege"; "groups" }
    groups_file = "/etc/prosody/offhook-groups.txt"
    -- [privilege] begin: what offhook may do: read and write the users' PEP nodes (and,
    -- with the roster line, write phone contacts into their rosters), nothing else (no
    -- message or presence permission, no reading of rosters: it uses none). "both", not
    -- "set", for pubsub: offhook reads a node before it writes it, so that it never
    -- overwrites what the user published there (their own activity, their vCard). Without
    -- it offhook still shows phone contacts and logs once why it does not publish into PEP.
    privileged_entities = {
        ["phone.example.com"] = {
            iq = { ["http://jabber.org/protocol/pubsub"] = "both" };
            -- [roster] begin: with offhook.conf [component] roster = everyone or groups:
            -- offhook adds, renames and removes the phone contacts in the users' rosters.
            roster = "set";
            -- [roster] end
        };
    }
    -- [privilege] end

Component "phone.example.com"
    component_secret = "change-me"
    modules_enabled = { "privilege" }
