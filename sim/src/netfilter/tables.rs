//! The iptables tables as base chains on the hooks ([`BaseChains`] for
//! [`Engine`]): which hooks each table serves and at which priority, as
//! `iptable_raw.c`, `iptable_mangle.c`, `iptable_nat.c`,
//! `iptable_filter.c` and `iptable_security.c` register them (and as
//! iptables-nft creates its base chains).

use super::eval::*;
use super::hooks::*;
use super::rule::TableName;
use crate::prob::Chooser;

impl TableName {
    /// The table's priority (`NF_IP_PRI_*`).
    pub fn priority(self) -> i32 {
        match self {
            TableName::Raw => -300,
            TableName::Mangle => -150,
            TableName::Nat => -100,
            TableName::Filter => 0,
            TableName::Security => 50,
        }
    }

    /// Whether the table has a built-in chain at `hook`.
    pub fn serves(self, hook: Hook) -> bool {
        use Hook::*;
        match self {
            TableName::Raw => matches!(hook, Prerouting | Output),
            TableName::Mangle => true,
            TableName::Nat => !matches!(hook, Forward),
            TableName::Filter | TableName::Security => matches!(hook, Input | Forward | Output),
        }
    }

    const ALL: [TableName; 5] = [
        TableName::Raw,
        TableName::Mangle,
        TableName::Nat,
        TableName::Filter,
        TableName::Security,
    ];

    fn from_id(id: usize) -> TableName {
        Self::ALL[id]
    }

    fn id(self) -> usize {
        Self::ALL.iter().position(|t| *t == self).expect("listed")
    }
}

impl Hook {
    /// The iptables tables with a built-in chain at this hook, in the
    /// order they run: by priority, the nat table at the NAT core's entry
    /// (-100 for DNAT hooks, 100 for SNAT hooks). Conntrack's lookup
    /// (-200) and confirmation (last) sit between them as the stack runs
    /// them.
    pub fn tables(self) -> Vec<TableName> {
        let mut v: Vec<TableName> = TableName::ALL
            .into_iter()
            .filter(|t| t.serves(self))
            .collect();
        v.sort_by_key(|t| match (t, self.nat_priority()) {
            (TableName::Nat, Some(p)) => p,
            _ => t.priority(),
        });
        v
    }
}

impl BaseChains for Engine {
    fn base_chains(&self, hook: Hook, out: &mut Vec<BaseChain>) {
        for t in TableName::ALL {
            if t.serves(hook) && self.has_chain(t, hook.chain()) {
                out.push(BaseChain {
                    // The nat table's SNAT hooks sit at 100
                    // (NF_IP_PRI_NAT_SRC); its chains order among NAT
                    // chains by that too.
                    priority: if t == TableName::Nat
                        && !matches!(hook, Hook::Prerouting | Hook::Output)
                    {
                        PRI_NAT_SRC
                    } else {
                        t.priority()
                    },
                    nat: t == TableName::Nat,
                    id: t.id(),
                });
            }
        }
    }

    fn run_chain(
        &self,
        hook: Hook,
        chain: BaseChain,
        pkt: &mut PacketCtx,
        host: &dyn HostFacts,
        state: &mut MatchState,
        chooser: &mut dyn Chooser,
        opts: EvalOptions,
    ) -> Result<ChainOutcome, EvalError> {
        let table = TableName::from_id(chain.id);
        let mut steps = Vec::new();
        let verdict = self.run(
            table,
            hook.chain(),
            pkt,
            host,
            state,
            chooser,
            opts,
            &mut steps,
        )?;
        Ok(ChainOutcome {
            by_policy: matches!(steps.last(), Some(Step::Policy { .. })),
            site: ChainSite::Iptables(table),
            verdict: verdict.clone(),
            event: Event::Table {
                hook,
                table,
                steps,
                verdict,
            },
        })
    }
}
