// Prints the search attributes as `Name=Type` lines for the Temporal CLI (scripts/lib/common.sh):
// the list lives once, in src/temporal/search-attributes.ts.
import { searchAttributeFlags } from '../../src/temporal/search-attributes.js';

console.log(searchAttributeFlags().join('\n'));
