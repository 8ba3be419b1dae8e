// Prints the search attributes as `Name=Type` lines for the Temporal CLI (scripts/lib/common.sh,
// installers): the list lives once, in search-attributes.ts.
import { searchAttributeFlags } from './search-attributes.js';

console.log(searchAttributeFlags().join('\n'));
