package synth

import (
	"math/rand/v2"
	"strings"
)

// Surnames in rough order of US frequency. They are drawn with weight
// 1/(rank+30), which gives Smith about 1.6 % of people and the rarest name
// about 0.2 %: plenty of unrelated Smiths and Johnsons at different
// addresses, which a naive same-last-name rule would confuse with family.
var surnames = strings.Fields(`
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez
Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin
Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson
Walker Young Allen King Wright Scott Torres Nguyen Hill Flores
Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts
Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes
Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper
Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson
Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes
Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez
Powell Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes
Gonzales Fisher Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham
Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson
Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens
Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen
Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter
Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks
Holmes Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox
Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols Stephens
Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins
Arnold Pierce Vazquez Hansen Peters Santos Hart Bradley Knight Elliott
Cunningham Duncan Armstrong Hudson Carroll Lane Riley Andrews Alvarado Ray
Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Contreras Willis
Carpenter Lawrence Sandoval Guerrero George Chapman Rios Estrada Ortega Watkins
Greene Nunez Wheeler Valdez Harper Burke Larson Santiago Maldonado Morrison
Franklin Carlson Austin Dominguez Carr Lawson Jacobs Obrien Lynch Singh
Vega Bishop Montgomery Oliver Jensen Harvey Williamson Gilbert Dean Sims
Espinoza Howell Li Wong Reid Hanson Le McCoy Garrett Burton
Fuller Wang Weber Welch Rojas Lucas Marquez Fields Park Yang
Little Banks Padilla Day Walsh Bowman Schultz Luna Fowler Mejia
Davidson Acosta Brewer May Holland Juarez Newman Pearson Curtis Cortez
Douglas Schneider Joseph Barrett Navarro Figueroa Keller Avila Wade Molina
Stanley Hopkins Campos Barnett Bates Chambers Caldwell Beck Lambert Miranda
Byrd Craig Ayala Lowe Frazier Powers Neal Leonard Gregory Carrillo
Sutton Fleming Rhodes Shelton Schwartz Norris Jennings Watts Duran Walters
Cohen McDaniel Moran Parks Steele Vaughn Becker Holt Deleon Barker
Terry Hale Leon Hood Benson Haynes Horton Miles Lyons Pham
Graves Bush Thornton Wolfe Warner Cabrera McKinney Mann Zimmerman Dawson
Lara Fletcher Page McCarthy Love Robles Cervantes Solis Erickson Reeves
Chang Klein Salinas Fuentes Baldwin Daniel Simon Velasquez Hardy Higgins
Aguirre Lin Cummings Chandler Sharp Barber Bowen Ochoa Dennis Robbins
Liu Ramsey Francis Griffith Paul Blair Oconnor Cardenas Pacheco Cross
Calderon Quinn Moss Swanson Chan Rivas Khan Rodgers Serrano Fitzgerald
Rosales Stevenson Christensen Manning Gill Curry McLaughlin Harmon McGee Gross
Doyle Garner Newton Burgess Reese Walton Blake Trujillo Adkins Brady
Goodman Roman Webster Goodwin Fischer Huang Potter Delacruz Montoya Todd
Wu Hines Mullins Castaneda Malone Cannon Tate Mack Sherman Hubbard
Hodges Zhang Guerra Wolf Valencia Saunders Franco Rowe Gallagher Farmer
Hammond Hampton Townsend Ingram Wise Gallegos Clarke Barton Schroeder Maxwell
Waters Logan Camacho Strickland Norman Person Colon Parsons Frank Harrington
Glover Osborne Buchanan Casey Floyd Patton Ibarra Ball Tyler Suarez
Bowers Orozco Salas Cobb Gibbs Andrade Bauer Conner Moody Escobar
McGuire Lloyd Mueller Hartman French Kramer McBride Pope Lindsey Velazquez
Norton McCormick Sparks Flynn Yates Hogan Marsh Macias Villanueva Zamora
Pratt Stokes Owen Ballard Lang Brock Villarreal Charles Drake Barrera
Cain Patrick Pineda Burnett Mercado Santana Shepherd Bautista Ali Shaffer
Lamb Trevino McKenzie Hess Ware Olsen Cochran Morton Nash Wilkins
Petersen Briggs Shah Roth Nicholson Holloway Lozano Rangel Flowers Hoover
Short Arias Mora Valenzuela Bryan Meyers Weiss Underwood Bass Greer
Summers Houston Carson Morrow Clayton Whitaker Decker Yoder Collier Zuniga
`)

// commonSurnames are the ones the scripted "unrelated namesakes" confounder
// picks from.
var commonSurnames = surnames[:10]

var femaleNames = strings.Fields(`
Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen
Lisa Nancy Betty Margaret Sandra Ashley Kimberly Emily Donna Michelle
Carol Amanda Dorothy Melissa Deborah Stephanie Rebecca Sharon Laura Cynthia
Kathleen Amy Angela Shirley Anna Brenda Pamela Emma Nicole Helen
Samantha Katherine Christine Debra Rachel Carolyn Janet Catherine Maria Heather
Diane Ruth Julie Olivia Joyce Virginia Victoria Kelly Lauren Christina
Joan Evelyn Judith Megan Andrea Cheryl Hannah Jacqueline Martha Gloria
Teresa Ann Sara Madison Frances Kathryn Janice Jean Abigail Alice
Judy Sophia Grace Denise Amber Doris Marilyn Danielle Beverly Isabella
Theresa Diana Natalie Brittany Charlotte Marie Kayla Alexis Lori Ava
Mia Chloe Aaliyah Camila Priya Mei Fatima Yesenia Lucia Ximena
`)

var maleNames = strings.Fields(`
James Robert John Michael David William Richard Joseph Thomas Christopher
Charles Daniel Matthew Anthony Mark Donald Steven Andrew Paul Joshua
Kenneth Kevin Brian George Timothy Ronald Jason Edward Jeffrey Ryan
Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon
Benjamin Samuel Gregory Alexander Patrick Frank Raymond Jack Dennis Jerry
Tyler Aaron Jose Adam Nathan Henry Zachary Douglas Peter Kyle
Noah Ethan Jeremy Walter Christian Keith Roger Terry Austin Sean
Gerald Carl Harold Dylan Arthur Lawrence Jordan Jesse Bryan Billy
Bruce Gabriel Joe Logan Alan Juan Albert Willie Elijah Wayne
Randy Vincent Mason Roy Ralph Bobby Russell Bradley Philip Eugene
Liam Lucas Mateo Omar Wei Raj Hiroshi Diego Luis Andre
`)

var streetNames = strings.Fields(`
Maple Oak Pine Cedar Elm Washington Lake Hill Park Main
Walnut Spring Ridge Church Willow Mill Sunset Jackson Lincoln Highland
Franklin Chestnut Adams Meadow River Forest Jefferson Madison Center Union
Prospect Grove Locust Dogwood Hickory Laurel Bay Broad Court Valley
Orchard Harbor Beacon Summit Clinton Front Garden Liberty Monroe Poplar
Greenwood Fairview Belmont Spruce Magnolia Cherry Ashland Atlantic Bedford Carroll
`)

var streetSuffixes = []string{"St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Pl", "Ct", "Ter", "Way"}

// region is where a facility's patients and staff live.
type region struct {
	towns []town
}

type town struct {
	city      string
	state     string
	zipPrefix string
}

var regions = map[string]region{
	"America/New_York": {towns: []town{
		{"New York", "NY", "100"}, {"Brooklyn", "NY", "112"}, {"Queens", "NY", "113"}, {"Bronx", "NY", "104"},
		{"Yonkers", "NY", "107"}, {"Jersey City", "NJ", "073"}, {"Hoboken", "NJ", "070"}, {"Staten Island", "NY", "103"},
	}},
	"America/Chicago": {towns: []town{
		{"Chicago", "IL", "606"}, {"Evanston", "IL", "602"}, {"Oak Park", "IL", "603"}, {"Cicero", "IL", "608"},
		{"Skokie", "IL", "600"}, {"Berwyn", "IL", "604"},
	}},
	"America/Los_Angeles": {towns: []town{
		{"Los Angeles", "CA", "900"}, {"Pasadena", "CA", "911"}, {"Glendale", "CA", "912"}, {"Long Beach", "CA", "908"},
		{"Burbank", "CA", "915"}, {"Santa Monica", "CA", "904"},
	}},
	"America/Denver": {towns: []town{
		{"Denver", "CO", "802"}, {"Aurora", "CO", "800"}, {"Lakewood", "CO", "802"}, {"Boulder", "CO", "803"},
	}},
}

var defaultRegion = region{towns: []town{
	{"Springfield", "ST", "990"}, {"Riverside", "ST", "991"}, {"Fairview", "ST", "992"}, {"Georgetown", "ST", "993"},
}}

func regionFor(tz string) region {
	if r, ok := regions[tz]; ok {
		return r
	}
	return defaultRegion
}

// surnameSampler draws surnames with weight 1/(rank+30).
type surnameSampler struct {
	cum []float64
}

func newSurnameSampler() *surnameSampler {
	s := &surnameSampler{cum: make([]float64, len(surnames))}
	total := 0.0
	for i := range surnames {
		total += 1 / float64(i+30)
		s.cum[i] = total
	}
	for i := range s.cum {
		s.cum[i] /= total
	}
	return s
}

func (s *surnameSampler) draw(r *rand.Rand) string {
	x := r.Float64()
	lo, hi := 0, len(s.cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if s.cum[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return surnames[lo]
}

func firstName(r *rand.Rand, female bool) string {
	if female {
		return femaleNames[r.IntN(len(femaleNames))]
	}
	return maleNames[r.IntN(len(maleNames))]
}
